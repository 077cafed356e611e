"""Handing over to other tools: Airflow DAG files (`elt airflow`) and the read-only BI role
on the marts (`elt bi-role`)."""
