# The pipeline's image: the `elt` command on a slim Python 3.11, dependencies from requirements.lock.
#
#   docker build -t sqlmesh-elt:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm sqlmesh-elt:0.1.0 demo        # the embedded DuckDB demo, inside the container
#   docker compose up -d                          # the production stack (compose.yaml)
#
# Nothing secret or local is copied: .dockerignore admits only the files named below, and every
# setting comes from the environment at run time (README, "Environment variables").
# BASE_IMAGE must be Debian bookworm with python3 (3.11) and its venv module: the official image
# by default, or a local stand-in where no registry is reachable (docs/how-to/run-with-containers.md).
# Guide: docs/how-to/run-with-containers.md. Decision: docs/decisions/0012-containers-and-ci.md.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: the virtualenv in /opt/venv; compilers stay in this stage
FROM ${BASE_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# psycopg2 (required by sqlmesh[postgres]) has no Linux wheel on PyPI: it is compiled here, with
# gcc and libpq-dev, and Python's headers where the base lacks them (Debian's python3 does; the
# official image ships them).
RUN apt-get update \
 && packages=(gcc libc6-dev libpq-dev) \
 && include="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
 && if [ ! -f "${include}/Python.h" ]; then packages+=(python3-dev); fi \
 && apt-get install -y --no-install-recommends "${packages[@]}" \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, in their own layer: a code change does not reinstall them. The image gets
# the runtime pins of pyproject.toml, each at its requirements.lock version (the lock also freezes
# the test extras, which the image does not need); the last check fails the build if anything not
# frozen in the lock was installed (pyproject.toml changed without `make lock`). The test suites
# that pandas, numpy and pyarrow ship (and pyarrow's C++ headers) are deleted: about 60 MB that
# nothing imports at run time.
COPY pyproject.toml requirements.lock ./
RUN python3 -m venv /opt/venv \
 && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > runtime.txt \
 && /opt/venv/bin/pip install --no-cache-dir -r runtime.txt -c requirements.lock \
 && if /opt/venv/bin/pip freeze | grep -vxF -f requirements.lock | grep -v -e '^pip==' -e '^setuptools=='; then \
      echo "error: the packages above are not frozen in requirements.lock; run make lock" >&2; exit 1; \
    fi \
 && site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && rm -rf "${site}/pandas/tests" "${site}/pyarrow/tests" "${site}/pyarrow/include" \
 && find "${site}/numpy" -type d -name tests -prune -exec rm -rf {} +

# ---- runtime
FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# libpq5: the client library psycopg2 was compiled against. A fixed uid, so volumes and
# Kubernetes' runAsNonRoot can name it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 elt \
 && useradd --uid 10001 --gid elt --home-dir /home/elt --create-home --shell /usr/sbin/nologin elt
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ELT_PROJECT_DIR=/app
WORKDIR /app
# The SQLMesh project and the two packages; the unit-test YAML files run with every plan.
COPY pyproject.toml README.md config.yaml external_models.yaml ./
COPY audits/ audits/
COPY macros/ macros/
COPY models/ models/
COPY sources/ sources/
COPY orchestrator/ orchestrator/
COPY tests/models/*.yaml tests/models/
# Installed in place (as `make` does), so `elt` finds the project at /app; the code stays owned by
# root and read-only for the service user, which writes only data/ (a volume in compose.yaml) and
# SQLMesh's logs/ and .cache/.
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps -e . \
 && python3 -m compileall -q sources orchestrator \
 && mkdir -p data logs .cache \
 && chown elt:elt data logs .cache
USER 10001:10001
# Labels last: a new revision or date must not invalidate the layers above.
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="sqlmesh-elt" \
      org.opencontainers.image.description="ELT pipeline on SQLMesh: loaders, immutable landing, audited models, scheduler (elt)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# The image has no .git: model deploys record this commit (elt status), unchecked (docs/runbook.md#who-deployed-the-models)
ENV ELT_GIT_COMMIT=${REVISION}
# `elt status` reads the run history: it fails when the warehouse (history store) is unreachable.
HEALTHCHECK --interval=1m --timeout=30s --start-period=1m --retries=3 CMD ["elt", "status"]
ENTRYPOINT ["elt"]
CMD ["--help"]
