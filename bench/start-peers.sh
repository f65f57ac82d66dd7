#!/usr/bin/env bash
# Install and start the peers for side-by-side benchmarks (PEERS.md): dockerd with BuildKit and buildah.
set -euo pipefail
apt-get install -y -qq docker.io buildah >/dev/null
if ! /usr/bin/docker info >/dev/null 2>&1; then
  mkdir -p /etc/rbuild-bench
  cat > /etc/rbuild-bench/daemon.json <<'J'
{"storage-driver":"overlay2","bridge":"none","iptables":false,"ip-forward":false,"ip-masq":false,"insecure-registries":["127.0.0.1:5000"]}
J
  setsid dockerd --config-file /etc/rbuild-bench/daemon.json --pidfile /run/rbuild-bench-dockerd.pid >/var/log/rbuild-bench-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 60); do /usr/bin/docker info >/dev/null 2>&1 && break; sleep 1; done
fi
/usr/bin/docker info --format 'dockerd {{.ServerVersion}} ready'
