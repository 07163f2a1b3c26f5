# The local stack's docker socket proxy: HAProxy 2.6 from Debian's archive with the
# allow-list of docker/local/socket-proxy.cfg, as nobody in the socket's group.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy=2.6.* \
    && rm -rf /var/lib/apt/lists/*
COPY socket-proxy.cfg /etc/haproxy/socket-proxy.cfg
USER 65534:65534
HEALTHCHECK NONE
ENTRYPOINT ["haproxy", "-db", "-f", "/etc/haproxy/socket-proxy.cfg"]
