#!/usr/bin/env bash
# What `make demo` and `make test` need from the machine, installed and started if missing:
#   system.sh demo                  python3-venv and redis-server
#   system.sh test DB_URL REDIS_URL RABBITMQ_URL
#                                   the same, PostgreSQL, openssh-server, sudo, Chromium,
#                                   strace, dnsmasq, RabbitMQ, iproute2 and the system Python's
#                                   cryptography; then PostgreSQL, Redis and RabbitMQ started
#                                   on their URLs when they are local and down.
# Debian packages, through apt-get (as root, or with sudo). CCS_SYSTEM_DRY_RUN=1 only says
# what it would do; the tests check a bare machine's path with it (CCS_SBIN and
# CCS_SYSTEM_PYTHON stand in for /usr/sbin and /usr/bin/python3 there).
set -euo pipefail
mode=${1:-test}
db_url=${2:-postgres://postgres@127.0.0.1:5432/ccs}
broker_url=${3:-redis://127.0.0.1:6379/0}
rabbitmq_url=${4:-amqp://guest:guest@127.0.0.1:5672/}
dry=${CCS_SYSTEM_DRY_RUN:-}
system_python=${CCS_SYSTEM_PYTHON-/usr/bin/python3}
PATH="$PATH:${CCS_SBIN-/usr/local/sbin:/usr/sbin:/sbin}"  # sshd, pg_ctlcluster live there

has() { command -v "$1" >/dev/null 2>&1; }
say() { echo "system: $*" >&2; }

missing=()
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
has redis-server || missing+=(redis-server)
if [ "$mode" = test ]; then
    has pg_ctlcluster || missing+=(postgresql)
    has sshd || missing+=(openssh-server)      # the SSH tests start their own sshd
    has sudo || missing+=(sudo)                # running as another account over SSH
    has chromium || missing+=(chromium)        # the web pages' browser tests
    has strace || missing+=(strace)            # the agent's hardening tests
    has dnsmasq || missing+=(dnsmasq-base)     # a DNS server for the resolver's tests
    has rabbitmq-server || missing+=(rabbitmq-server)  # tasks over RabbitMQ as the broker
    has ip || missing+=(iproute2)              # datacenters as network namespaces (faults)
    # agent_install runs the agent on the host's system Python, which needs cryptography.
    "$system_python" -c 'import cryptography' 2>/dev/null || missing+=(python3-cryptography)
fi

fresh_postgres=
if ((${#missing[@]})); then
    [[ " ${missing[*]} " == *" postgresql "* ]] && fresh_postgres=1
    if [ -n "$dry" ]; then
        say "would install: ${missing[*]}"
    else
        say "installing the Debian packages ${missing[*]}"
        as_root=()
        if [ "$(id -u)" != 0 ]; then
            has sudo || { say "run as root: apt-get install ${missing[*]}"; exit 1; }
            as_root=(sudo -n)
        fi
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
fi
[ "$mode" = test ] || exit 0

# host, port and user of a URL, or nothing if it is not this machine's
local_endpoint() {
    python3 - "$1" <<'PY'
import sys
from urllib.parse import urlsplit
url = urlsplit(sys.argv[1])
if url.hostname in ("127.0.0.1", "localhost", "::1"):
    print(url.hostname, url.port or {"redis": 6379, "amqp": 5672}.get(url.scheme, 5432),
          url.username or "-")
PY
}

read -r db_host db_port db_user < <(local_endpoint "$db_url") || true
if [ -n "${db_host:-}" ] && ! pg_isready -q -h "$db_host" -p "$db_port" 2>/dev/null; then
    if [ -n "$dry" ]; then
        say "would start PostgreSQL on $db_host:$db_port"
    else
        cluster=$(ls /etc/postgresql | sort -V | tail -1)
        say "starting PostgreSQL $cluster"
        pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
        for _ in $(seq 30); do pg_isready -q -h "$db_host" -p "$db_port" && break; sleep 1; done
    fi
fi
if [ -n "${db_host:-}" ] && [ -z "$dry" ] && ! psql -h "$db_host" -p "$db_port" \
        -U "$db_user" -d postgres -Atqc 'select 1' </dev/null >/dev/null 2>&1; then
    if [ -n "$fresh_postgres" ]; then
        # A cluster installed just now asks postgres@localhost for a password the tests do
        # not have: let that one user in over loopback only.
        hba=$(ls /etc/postgresql/*/main/pg_hba.conf | sort -V | tail -1)
        say "letting postgres log in over loopback without a password ($hba)"
        sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
        pg_ctlcluster --skip-systemctl-redirect "$(basename "$(dirname "$(dirname "$hba")")")" \
            main reload
    else
        say "PostgreSQL on $db_host:$db_port refuses $db_url: set TEST_DATABASE_URL to a user" \
            "that may create databases"
        exit 1
    fi
fi

read -r redis_host redis_port _ < <(local_endpoint "$broker_url") || true
if [ -n "${redis_host:-}" ] && ! redis-cli -h "$redis_host" -p "$redis_port" ping \
        >/dev/null 2>&1; then
    if [ -n "$dry" ]; then
        say "would start Redis on $redis_host:$redis_port"
    else
        say "starting Redis on $redis_host:$redis_port"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind "$redis_host" --port "$redis_port" --save "" \
            --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ccs-test.log
        for _ in $(seq 30); do
            redis-cli -h "$redis_host" -p "$redis_port" ping >/dev/null 2>&1 && break
            sleep 1
        done
    fi
fi

read -r mq_host mq_port _ < <(local_endpoint "$rabbitmq_url") || true
if [ -n "${mq_host:-}" ] && ! (exec 3<>"/dev/tcp/$mq_host/$mq_port") 2>/dev/null; then
    if [ -n "$dry" ]; then
        say "would start RabbitMQ on $mq_host:$mq_port"
    else
        say "starting RabbitMQ on $mq_host:$mq_port"
        RABBITMQ_NODE_IP_ADDRESS="$mq_host" RABBITMQ_NODE_PORT="$mq_port" \
            rabbitmq-server -detached
        rabbitmqctl await_startup >/dev/null
    fi
fi
