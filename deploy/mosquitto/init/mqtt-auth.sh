#!/bin/sh
# The broker's logins, ACL and TLS certificate, the HTTP API's bearer token that fer-service and
# Prometheus share, and Grafana's admin password. docker-compose.yml's one-shot `mqtt-auth` service runs it before the others start,
# on every `docker compose up`; it only creates what is missing, so the secrets of the first start stay
# (deploy/mqtt-auth.md, and deploy/README.md, "Monitoring").
#
#   mqtt-auth.sh              a password for each shipped user that has none, the password file and
#                             the ACL rebuilt, a CA and the broker's certificate when missing, the API
#                             token and Grafana's admin password when missing
#   mqtt-auth.sh passwd USER  set USER's password from standard input (a new user too), then rebuild
#   mqtt-auth.sh remove USER  remove USER's login (a shipped user gets a new password at the next start);
#                             `remove api-token`: the next start makes a new token (likewise grafana-admin)
#   mqtt-auth.sh show USER    print USER's password; `show ca` prints the CA certificate, `show api-token`
#                             the API token, `show grafana-admin` Grafana's admin password
#
# Nothing secret is printed unless `show` asks for it.
set -eu

AUTH_DIR=${AUTH_DIR:-/auth}           # the fer-edge-mqtt-auth volume
SHIPPED_DIR=${SHIPPED_DIR:-/shipped}  # deploy/mosquitto, read-only: acl, and conf.d/*.acl of your own
BROKER_UID=${BROKER_UID:-1883}        # the `mosquitto` user of the eclipse-mosquitto image
SERVICE_UID=${SERVICE_UID:-10001}     # FER_UID of deploy/service.Dockerfile
# The group that may read the API token besides the service: compose sets Prometheus's. Unset, the
# service's uid alone reads it.
PROMETHEUS_GID=${PROMETHEUS_GID:-}
# Grafana's uid (the grafana/grafana image runs as 472), which alone reads its admin password. Unset,
# the password is root's alone.
GRAFANA_UID=${GRAFANA_UID:-}
TLS_NAMES=${TLS_NAMES:-}              # more names for the broker's certificate: host names and IPs, comma separated
USERS="fer admin homeassistant dashboard"
# The service reads this one; every other password file is root's alone.
SERVICE_USER=fer
# Re-issue the broker's certificate when it has less than this left (seconds: 30 days).
RENEW_BEFORE_S=2592000

users_dir=$AUTH_DIR/users
tls_dir=$AUTH_DIR/tls
api_token=$AUTH_DIR/api-token
grafana_admin=$AUTH_DIR/grafana-admin
# Names `show` and `remove` read as their own: no login may take them.
RESERVED="ca api-token grafana-admin"

die() {
    echo "mqtt-auth: $*" >&2
    exit 1
}

valid_user() {
    # Names go into the password file (name:hash) and the ACL (`user NAME`): no separators there.
    case $1 in
        "" | *[!A-Za-z0-9_-]*) die "user names are letters, digits, _ and - only: '$1'" ;;
    esac
}

random_secret() {
    # 192 bits, hex: nothing a shell, a URL or YAML would have to quote.
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

write_password() {  # USER PASSWORD
    tmp=$users_dir/.$1.new
    printf '%s\n' "$2" >"$tmp"
    if [ "$1" = "$SERVICE_USER" ]; then
        chown "$SERVICE_UID" "$tmp"
    fi
    chmod 0400 "$tmp"
    mv -f "$tmp" "$users_dir/$1"
}

build_passwd() {
    tmp=$AUTH_DIR/.passwd.new
    : >"$tmp"
    for file in "$users_dir"/*; do
        [ -f "$file" ] || continue
        user=${file##*/}
        valid_user "$user"
        # On standard input, not as an argument, so that no password shows in the process list.
        pw=$(head -n 1 "$file")
        printf '%s\n%s\n' "$pw" "$pw" | mosquitto_passwd "$tmp" "$user" >/dev/null
    done
    chown "$BROKER_UID" "$tmp"
    chmod 0600 "$tmp"
    mv -f "$tmp" "$AUTH_DIR/passwd"
}

build_acl() {
    tmp=$AUTH_DIR/.acl.new
    cat "$SHIPPED_DIR/acl" >"$tmp"
    for extra in "$SHIPPED_DIR"/conf.d/*.acl; do
        [ -f "$extra" ] || continue
        printf '\n# from conf.d/%s\n' "${extra##*/}" >>"$tmp"
        cat "$extra" >>"$tmp"
    done
    chown "$BROKER_UID" "$tmp"
    chmod 0600 "$tmp"
    mv -f "$tmp" "$AUTH_DIR/acl"
}

subject_alt_names() {
    # The compose service name for containers, loopback for the gateway itself, then TLS_NAMES.
    names="DNS:mosquitto,DNS:localhost,IP:127.0.0.1"
    for name in $(printf '%s' "$TLS_NAMES" | tr ',' ' '); do
        case $name in
            *:*) names="$names,IP:$name" ;;          # IPv6
            *[!0-9.]*) names="$names,DNS:$name" ;;
            *) names="$names,IP:$name" ;;            # IPv4
        esac
    done
    printf '%s' "$names"
}

openssl_config() {  # SUBJECT_ALT_NAMES
    cat <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = fer-edge MQTT
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = $1
CNF
}

new_key() {  # PATH
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

install_file() {  # SOURCE DEST MODE [OWNER]
    cp "$1" "$2.new"
    if [ $# -eq 4 ]; then
        chown "$4" "$2.new"
    fi
    chmod "$3" "$2.new"
    mv -f "$2.new" "$2"
}

ensure_tls() {
    mkdir -p "$tls_dir"
    chmod 0755 "$tls_dir"
    yours=$SHIPPED_DIR/conf.d/tls
    if [ -f "$yours/server.crt" ]; then
        # A certificate of your own CA (deploy/mqtt-auth.md, "TLS", says how), copied with the owner and mode
        # the broker needs; the generated CA is dropped so that nothing signs with it any more.
        for file in ca.crt server.crt server.key; do
            [ -f "$yours/$file" ] || die "conf.d/tls/server.crt is there, but conf.d/tls/$file is missing"
        done
        install_file "$yours/ca.crt" "$tls_dir/ca.crt" 0644
        install_file "$yours/server.crt" "$tls_dir/server.crt" 0644
        install_file "$yours/server.key" "$tls_dir/server.key" 0600 "$BROKER_UID"
        rm -f "$tls_dir/ca.key" "$tls_dir/server.names"
        return
    fi
    names=$(subject_alt_names)
    cnf=$tls_dir/.openssl.cnf
    openssl_config "$names" >"$cnf"
    if [ ! -f "$tls_dir/ca.key" ]; then
        new_key "$tls_dir/.ca.key.new"
        openssl req -x509 -new -key "$tls_dir/.ca.key.new" -config "$cnf" -extensions ca -days 3650 \
            -subj "/CN=fer-edge MQTT CA $(random_secret | cut -c1-8)" -out "$tls_dir/.ca.crt.new"
        chmod 0600 "$tls_dir/.ca.key.new"
        chmod 0644 "$tls_dir/.ca.crt.new"
        mv -f "$tls_dir/.ca.key.new" "$tls_dir/ca.key"
        mv -f "$tls_dir/.ca.crt.new" "$tls_dir/ca.crt"
        rm -f "$tls_dir/server.crt"
        echo "mqtt-auth: made a new CA for the broker's TLS listener"
    fi
    if [ -f "$tls_dir/server.crt" ] && [ "$(cat "$tls_dir/server.names" 2>/dev/null)" = "$names" ] \
        && openssl x509 -checkend "$RENEW_BEFORE_S" -noout -in "$tls_dir/server.crt" >/dev/null; then
        rm -f "$cnf"
        return
    fi
    new_key "$tls_dir/.server.key.new"
    openssl req -new -key "$tls_dir/.server.key.new" -config "$cnf" -subj "/CN=mosquitto" \
        -out "$tls_dir/.server.csr"
    openssl x509 -req -in "$tls_dir/.server.csr" -CA "$tls_dir/ca.crt" -CAkey "$tls_dir/ca.key" \
        -set_serial "0x$(random_secret | cut -c1-30)" -days 825 -extfile "$cnf" -extensions server \
        -out "$tls_dir/.server.crt.new" 2>/dev/null
    chown "$BROKER_UID" "$tls_dir/.server.key.new"
    chmod 0600 "$tls_dir/.server.key.new"
    chmod 0644 "$tls_dir/.server.crt.new"
    mv -f "$tls_dir/.server.key.new" "$tls_dir/server.key"
    mv -f "$tls_dir/.server.crt.new" "$tls_dir/server.crt"
    printf '%s\n' "$names" >"$tls_dir/server.names"
    rm -f "$tls_dir/.server.csr" "$cnf"
    echo "mqtt-auth: issued the broker's certificate for $names"
}

ensure_secret() {  # FILE WHAT: a random secret in FILE unless it holds one; `show` prints it
    if [ ! -s "$1" ]; then
        tmp=$AUTH_DIR/.$(basename "$1").new
        printf '%s\n' "$(random_secret)" >"$tmp"
        mv -f "$tmp" "$1"
        echo "mqtt-auth: made $2 (mqtt-auth show $(basename "$1") prints it)"
    fi
}

ensure_api_token() {
    ensure_secret "$api_token" "the HTTP API's bearer token"
    # On every run, not only when it is made: a token kept from an earlier start follows a change of
    # PROMETHEUS_GID, and a new one is root's alone until this line hands it over.
    if [ -n "$PROMETHEUS_GID" ]; then
        chown "$SERVICE_UID:$PROMETHEUS_GID" "$api_token"
        chmod 0440 "$api_token"
    else
        chown "$SERVICE_UID" "$api_token"
        chmod 0400 "$api_token"
    fi
}

ensure_grafana_admin() {
    ensure_secret "$grafana_admin" "Grafana's admin password"
    if [ -n "$GRAFANA_UID" ]; then
        chown "$GRAFANA_UID" "$grafana_admin"
    fi
    chmod 0400 "$grafana_admin"
}

prepare() {
    umask 077
    mkdir -p "$users_dir"
    # Readable paths, unreadable files: each secret's mode and owner decide who reads it.
    chmod 0755 "$AUTH_DIR" "$users_dir"
}

init() {
    prepare
    for user in $USERS; do
        if [ ! -s "$users_dir/$user" ]; then
            write_password "$user" "$(random_secret)"
            echo "mqtt-auth: made a password for '$user' (mqtt-auth show $user prints it)"
        fi
    done
    build_passwd
    build_acl
    ensure_tls
    ensure_api_token
    ensure_grafana_admin
}

case ${1:-init} in
    init)
        init
        ;;
    passwd)
        [ $# -eq 2 ] || die "usage: mqtt-auth.sh passwd USER  (the password on standard input)"
        valid_user "$2"
        # `show` reads these two names as its own, so no login may take them.
        for name in $RESERVED; do
            [ "$2" != "$name" ] || die "'$2' is reserved: 'show $2' prints something else"
        done
        prepare
        if [ -t 0 ]; then
            printf 'new password for %s: ' "$2" >&2
            stty -echo
            IFS= read -r pw || true
            stty echo
            echo >&2
        else
            IFS= read -r pw || true
        fi
        [ -n "$pw" ] || die "empty password for '$2'"
        write_password "$2" "$pw"
        build_passwd
        echo "mqtt-auth: set the password of '$2'; the broker reads it on SIGHUP or restart"
        ;;
    remove)
        [ $# -eq 2 ] || die "usage: mqtt-auth.sh remove USER|api-token|grafana-admin"
        if [ "$2" = api-token ]; then
            [ -f "$api_token" ] || die "no API token"
            rm -f "$api_token"
            echo "mqtt-auth: removed the API token; the next start makes a new one, then restart fer-service"
            exit 0
        fi
        if [ "$2" = grafana-admin ]; then
            [ -f "$grafana_admin" ] || die "no Grafana admin password"
            rm -f "$grafana_admin"
            echo "mqtt-auth: removed Grafana's admin password; the next start makes a new one, which Grafana" \
                "takes only when it creates its database"
            exit 0
        fi
        valid_user "$2"
        [ -f "$users_dir/$2" ] || die "no user '$2'"
        prepare
        rm -f "$users_dir/$2"
        build_passwd
        echo "mqtt-auth: removed '$2'; the broker forgets it on SIGHUP or restart"
        ;;
    show)
        [ $# -eq 2 ] || die "usage: mqtt-auth.sh show USER|ca|api-token|grafana-admin"
        if [ "$2" = ca ]; then
            cat "$tls_dir/ca.crt"
        elif [ "$2" = api-token ]; then
            [ -f "$api_token" ] || die "no API token yet: the first start makes it"
            cat "$api_token"
        elif [ "$2" = grafana-admin ]; then
            [ -f "$grafana_admin" ] || die "no Grafana admin password yet: the first start makes it"
            cat "$grafana_admin"
        else
            valid_user "$2"
            [ -f "$users_dir/$2" ] || die "no user '$2'"
            cat "$users_dir/$2"
        fi
        ;;
    *)
        die "unknown command '$1' (init, passwd USER, remove USER|api-token|grafana-admin," \
            "show USER|ca|api-token|grafana-admin)"
        ;;
esac
