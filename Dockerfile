# The gateway as a container image: `docker build -t gateway .`
#
#   docker run --rm -p 8080:8080 -v $PWD/conf/gateway.yaml:/etc/gateway/gateway.yaml:ro \
#     -e GATEWAY_HOST=0.0.0.0 -e GATEWAY_JWT_SECRET=... gateway
#
# The config is read from /etc/gateway/gateway.yaml (mount yours there; the image carries
# conf/gateway.yaml as a placeholder). Its server.host must be 0.0.0.0 to be reachable from
# outside the container; the admin listener stays where the config puts it (loopback by
# default): to publish it, set admin.host and admin.token. SIGTERM drains (server.drain_seconds).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package needs (README.md is setup.cfg's long_description).
WORKDIR /src
COPY setup.cfg pyproject.toml README.md LICENSE ./
COPY gateway ./gateway
RUN pip install . && rm -rf /src

# An unprivileged user with no shell and no home to write to.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir -p /etc/gateway
COPY conf/gateway.yaml /etc/gateway/gateway.yaml
WORKDIR /etc/gateway
USER 10001:10001

EXPOSE 8080 8081
# /-/health on the main listener: alive (readiness, /-/ready, is for the orchestrator's traffic decisions).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/-/health' % os.environ.get('GATEWAY_PORT', '8080'), timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway"]
CMD ["serve", "-c", "/etc/gateway/gateway.yaml"]
