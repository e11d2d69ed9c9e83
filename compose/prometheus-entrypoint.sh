#!/bin/sh
# Entrypoint of the compose lab's Prometheus (the `prometheus` profile): Debian's prometheus with
# compose/prometheus.yml, its TSDB in the container's tmpfs.
set -eu
say() { echo "weft-prometheus: $*" >&2; }

# The nodes open their health servers to the underlay only when COMPOSE_PROFILES says prometheus
# (they read it, as they read etcd from it); with `--profile prometheus` alone every node target
# would be refused, so say so rather than scrape nothing.
case ",${WEFT_PROFILES:-}," in
  *,prometheus,*) ;;
  *)
    say "the prometheus service needs COMPOSE_PROFILES=prometheus (not --profile prometheus): the nodes read it to serve /metrics on the underlay"
    exit 2
    ;;
esac

# No way out of the lab, as for the nodes: the default route Docker gives through the network
# that publishes the port carries nothing of the lab's.
if ip -4 route show default | grep -q .; then ip -4 route del default; fi

config=/etc/weft/prometheus.yml
case ",${WEFT_PROFILES:-}," in
  *,etcd,*)
    # The leases are in etcd (the etcd profile): scrape etcd's /metrics too.
    config=/run/prometheus.yml
    { cat /etc/weft/prometheus.yml; printf '  - job_name: etcd\n    static_configs:\n      - targets: [%s]\n' "'etcd:2379'"; } >"$config"
    ;;
esac

exec prometheus --config.file="$config" --storage.tsdb.path=/prometheus \
  --web.listen-address=0.0.0.0:9090 --storage.tsdb.retention.time=1d "$@"
