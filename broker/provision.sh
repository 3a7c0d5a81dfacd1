#!/usr/bin/env bash
# Writes the production broker's password file and least-privilege ACL (SPEC §7).
#
#   broker/provision.sh --out DIR [--prefix kvmsup] [--ha-prefix homeassistant] \
#       --agent HOST_ID[:SECRET]... --gateway GATEWAY_ID[:SECRET]... \
#       [--homeassistant USER[:SECRET]] [--legacy-discovery]
#
# DIR/passwd and DIR/acl describe exactly the users listed: a user left out is removed from both.
# A user given without a secret keeps the password it already has in DIR/passwd (so one secret
# can be rotated without retyping the others); a new user needs one. Running the same command
# twice leaves the same users, rules and passwords. Both files are replaced atomically; reload
# the broker afterwards (SIGHUP, or `docker kill -s HUP <broker>`).
#
# Secrets given here sit in this script's argv, and in mosquitto_passwd's for an instant: run it
# on the broker's machine (or a trusted one), not on a shared host.
set -euo pipefail

usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

die() {
    echo "provision.sh: $*" >&2
    exit 1
}

out=""
prefix="kvmsup"
ha_prefix="homeassistant"
agents=()
gateways=()
ha=""
legacy_discovery=0

while (($#)); do
    case "$1" in
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
        --ha-prefix) ha_prefix="${2:?--ha-prefix needs a value}"; shift 2 ;;
        --agent) agents+=("${2:?--agent needs HOST_ID[:SECRET]}"); shift 2 ;;
        --gateway) gateways+=("${2:?--gateway needs GATEWAY_ID[:SECRET]}"); shift 2 ;;
        --homeassistant) ha="${2:?--homeassistant needs USER[:SECRET]}"; shift 2 ;;
        --legacy-discovery) legacy_discovery=1; shift ;;
        -h | --help) usage ;;
        *) echo "provision.sh: unknown argument $1" >&2; usage ;;
    esac
done

[[ -n "$out" ]] || usage
if ((legacy_discovery)); then
    echo "provision.sh: --legacy-discovery: agents may write other hosts' old-layout" \
        "Home Assistant configs until you provision again without it" >&2
fi
((${#agents[@]} + ${#gateways[@]})) || [[ -n "$ha" ]] || die "no users given"
command -v mosquitto_passwd >/dev/null || die "mosquitto_passwd not found (apt install mosquitto)"

# The same rule as shared/topics.py validate_prefix: levels of [A-Za-z0-9_-].
prefix_re='^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$'
[[ "$prefix" =~ $prefix_re ]] || die "invalid --prefix '$prefix': levels of [A-Za-z0-9_-] only"
[[ "$ha_prefix" =~ $prefix_re ]] || die "invalid --ha-prefix '$ha_prefix'"
root="$prefix/v1"

# Host and gateway ids stand in topic levels and in ACL rules: SPEC §2's pattern exactly.
id_re='^[a-z0-9][a-z0-9_-]{0,62}$'

declare -A role_of=()   # username -> agent | gateway | homeassistant
declare -A secret_of=() # username -> secret ("" keeps the existing password)
order=()

add_user() { # role, NAME[:SECRET]
    local role="$1" spec="$2" name secret=""
    name="${spec%%:*}"
    [[ "$spec" == *:* ]] && secret="${spec#*:}"
    [[ -n "$name" ]] || die "empty $role username"
    # `/ + #` would turn ACL rules into wildcards or other users' subtrees; `:` ends
    # the name in the password file; whitespace ends it in the ACL.
    [[ "$name" != *[/+#:[:space:]]* ]] || die "$role username '$name' contains / + # : or space"
    [[ "$name" != "gateway" ]] || die "'gateway' is reserved for the gateways' own topics"
    if [[ "$role" != homeassistant && ! "$name" =~ $id_re ]]; then
        die "$role id '$name' must match $id_re"
    fi
    # Agents before the per-host discovery layout put a VM's configs under the node id
    # `kvmsup_<host>_<uuid hex>`: a host id ending in `_` and 32 hex digits would own, as its
    # own node id, another host's old one, and could take over that host's VM entities.
    if [[ "$role" == agent && "$name" =~ _[0-9a-f]{32}$ ]]; then
        die "agent id '$name' ends in _ and 32 hex digits, like an earlier layout's discovery node id kvmsup_<host>_<vm uuid>: choose another host id"
    fi
    if [[ -n "${role_of[$name]:-}" ]]; then
        # A gateway or HA user named like a host would also get that host's rules (pattern rules apply to every user).
        die "username '$name' given twice (as ${role_of[$name]} and as $role)"
    fi
    role_of[$name]="$role"
    secret_of[$name]="$secret"
    order+=("$name")
}

for a in "${agents[@]}"; do add_user agent "$a"; done
for g in "${gateways[@]}"; do add_user gateway "$g"; done
[[ -z "$ha" ]] || add_user homeassistant "$ha"

mkdir -p "$out"
passwd="$out/passwd"
acl="$out/acl"
umask 077
tmp_passwd="$(mktemp "$out/.passwd.XXXXXX")"
tmp_acl="$(mktemp "$out/.acl.XXXXXX")"
trap 'rm -f "$tmp_passwd" "$tmp_acl"' EXIT

# -- password file: keep the listed users' lines, drop the others, then set the new secrets --
if [[ -f "$passwd" ]]; then
    while IFS= read -r line; do
        user="${line%%:*}"
        if [[ -n "${role_of[$user]:-}" ]]; then
            printf '%s\n' "$line" >>"$tmp_passwd"
        fi
    done <"$passwd"
fi
for name in "${order[@]}"; do
    secret="${secret_of[$name]}"
    if [[ -n "$secret" ]]; then
        mosquitto_passwd -b "$tmp_passwd" "$name" "$secret" >/dev/null
    elif ! grep -q "^${name}:" "$tmp_passwd"; then
        die "new user '$name' needs a secret (NAME:SECRET)"
    fi
done

# -- ACL: one explicit `user` block per user; no `pattern` rules, which would apply to every
# user, gateways and Home Assistant included. Read = deliver to a subscriber:
# Mosquitto 2.0 grants every SUBSCRIBE and filters each message against `read` on delivery.
agent_rules() {
    local h="$1"
    cat <<EOF
# agent $h: writes only under its own host, reads only its own requests
user $h
topic write $root/$h/status
topic write $root/$h/metrics
topic write $root/$h/events
topic readwrite $root/$h/vm/+/state
topic write $root/$h/vm/+/metrics
topic write $root/$h/vm/+/guest
topic write $root/$h/reply/+
topic read $root/$h/cmd
topic read $root/$h/vm/+/set
topic read $ha_prefix/status
topic write $ha_prefix/+/kvmsup_$h/+/config
EOF
    # Every Home Assistant config of the host and its VMs sits under the node id `kvmsup_<host>`
    # (SPEC §6), so the rule above pins discovery to the host like every other rule here.
    if ((legacy_discovery)); then
        # Migration window only: agents before the per-host layout wrote a VM's configs under
        # `kvmsup_<host>_<uuid-hex>`, a level no ACL can tie to the host. These rules let an
        # upgraded agent clear them; they also let it write any node's config for these 12
        # (component, object) pairs, other hosts' included. Provision again without the flag
        # once every agent has restarted on the new version. See broker/README.md.
        local pair
        for pair in "${vm_discovery[@]}"; do
            printf 'topic write %s/%s/+/%s/config\n' "$ha_prefix" "${pair%%/*}" "${pair#*/}"
        done
    fi
    echo
}

# The entities of the earlier layout (agent/homeassistant/discovery.py VM_OBJECTS; the production test checks
# the list against it), for --legacy-discovery only.
vm_discovery=(
    switch/power sensor/state sensor/cpu sensor/memory_used sensor/memory_percent
    sensor/disk_read sensor/disk_write sensor/net_rx sensor/net_tx
    button/reboot button/force_off button/reset
)

gateway_rules() {
    local g="$1"
    cat <<EOF
# gateway $g: reads every host, its own replies; writes only requests and its own status
user $g
topic read $root/+/status
topic read $root/+/metrics
topic read $root/+/events
topic read $root/+/vm/+/state
topic read $root/+/vm/+/guest
topic read $root/+/reply/$g
topic write $root/+/cmd
topic write $root/gateway/$g/status

EOF
}

ha_rules() {
    local u="$1"
    cat <<EOF
# Home Assistant $u: reads what its entities show, sends plain VM commands, owns discovery
user $u
topic read $root/+/status
topic read $root/+/metrics
topic read $root/+/vm/+/state
topic read $root/+/vm/+/metrics
topic read $root/+/vm/+/guest
topic write $root/+/vm/+/set
topic readwrite $ha_prefix/#

EOF
}

{
    echo "# Generated by broker/provision.sh (prefix $prefix, HA prefix $ha_prefix). Do not edit:"
    echo "# change the command line and run it again."
    echo
    for name in "${order[@]}"; do
        case "${role_of[$name]}" in
            agent) agent_rules "$name" ;;
            gateway) gateway_rules "$name" ;;
            homeassistant) ha_rules "$name" ;;
        esac
    done
} >"$tmp_acl"

# Readable by the broker only; in Docker the image's mosquitto user is uid 1883 (broker/README.md).
chmod 600 "$tmp_passwd" "$tmp_acl"
mv -f "$tmp_passwd" "$passwd"
mv -f "$tmp_acl" "$acl"
trap - EXIT
echo "provision.sh: wrote $passwd and $acl (${#order[@]} users)" >&2
