"""The demos: the embedded one (`elt demo`), the production-style one (`elt demo --production`),
and the two upstream systems they serve: the Jaffle Shop application database and catalog API."""
