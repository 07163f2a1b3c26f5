# Postgres 15 from Debian's archive, for the local stack (docker/compose.local.yaml): the
# Prefect and MLflow databases. Runs as postgres (uid 999); docker/local/postgres-start.sh
# makes the cluster and its databases on the first start.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive PGDATA=/var/lib/postgresql/data
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql postgres \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15=15.* \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p "$PGDATA" \
    && chown -R postgres:postgres /var/lib/postgresql
COPY postgres-start.sh /usr/local/bin/postgres-start
ENV PATH=/usr/lib/postgresql/15/bin:$PATH
USER 999:999
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/postgres-start"]
