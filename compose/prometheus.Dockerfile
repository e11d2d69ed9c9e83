# The compose lab's Prometheus (profile `prometheus`): Debian's prometheus package on the lab's base
# image. Docker Hub's prom/prometheus would do on a machine that can pull it; Debian's package
# builds wherever the lab's own image builds (same BASE_IMAGE, Debian's mirrors), and is the
# Prometheus the netns lab runs (`weft lab up --prometheus`).
ARG BASE_IMAGE=node:24-bookworm-slim
FROM ${BASE_IMAGE}
# prometheus: the server (no recommends: the node exporter is not wanted here); iproute2: the
# entrypoint removes Docker's default route.
RUN set -eu; missing=""; \
    for p in prometheus iproute2; do \
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; \
    done; \
    if [ -n "$missing" ]; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing && rm -rf /var/lib/apt/lists/*; \
    fi
COPY compose/prometheus.yml /etc/weft/prometheus.yml
COPY compose/prometheus-entrypoint.sh /usr/local/bin/weft-prometheus
RUN chmod 0755 /usr/local/bin/weft-prometheus
ENTRYPOINT ["weft-prometheus"]
