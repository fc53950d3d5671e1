# Resolves the external programs the tests and benchmarks drive; sourced by scripts/install-test-deps.sh and
# scripts/install-container-tools.sh after `set -euo pipefail` and a cd to the repository root.
#
# Every tool ends up at .tools/bin/NAME, the one place test/ and bench/ look for it. Each is resolved once, in
# this order, and only a copy that answers its probe counts (a stale link or a broken stub does not):
#   keep       .tools/bin/NAME already works
#   path       a working NAME on PATH: .tools/bin/NAME becomes a symlink to it
#   installed  the Debian package is installed but its program is not on PATH (runc is in /usr/sbin): symlink
#   install    unpack the package with dpkg -x into .tools/root (no maintainer script runs, so no daemon starts),
#              or apt-get install it while /usr/sbin/policy-rc.d denies service starts; then as above
# `--plan` prints these decisions and changes nothing, so tests can check them without root or network.

TOOLS_DIR="$PWD/.tools"
TOOLS_BIN="$TOOLS_DIR/bin"
SCRIPT_NAME=$(basename "$0" .sh)
export DEBIAN_FRONTEND=noninteractive

TOOL_NAMES=()
declare -A TOOL_HOW TOOL_PKG TOOL_PROBE TOOL_EXPECT TOOL_FILE TOOL_LIBDIR DECISION SOURCE
# Programs whose package might start them as a daemon on apt-get install; checked for after every install.
DAEMON_NAMES=()

say() { printf '%s\n' "$*"; }
complain() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }

# define_tool NAME HOW PACKAGE PROBE EXPECT [FILE [LIBDIR]]
#   HOW      unpack (dpkg -x PACKAGE into .tools/root; FILE is the program inside it, LIBDIR its private
#            libraries, which get a wrapper setting LD_LIBRARY_PATH) or apt (apt-get install PACKAGE)
#   PROBE    arguments that make the program answer and exit 0; empty: it prints its usage and exits non-zero
#   EXPECT   text (case-insensitive) that answer contains
define_tool() {
  local name=$1
  TOOL_NAMES+=("$name")
  TOOL_HOW[$name]=$2
  TOOL_PKG[$name]=$3
  TOOL_PROBE[$name]=$4
  TOOL_EXPECT[$name]=$5
  TOOL_FILE[$name]=${6:-}
  TOOL_LIBDIR[$name]=${7:-}
}

probe_output() { # probe_output PROGRAM NAME: what PROGRAM answers to NAME's probe; fails unless it answered like NAME
  local program=$1 name=$2 out status=0 args=()
  [ -f "$program" ] && [ -x "$program" ] || { echo "no executable file at $program"; return 1; }
  read -ra args <<<"${TOOL_PROBE[$name]}"
  out=$(timeout 20 "$program" "${args[@]}" 2>&1 </dev/null) || status=$?
  printf '%s\n' "$out"
  # 124 is timeout's, 126/127 the shell's cannot-execute, above 128 a signal: never an answer.
  [ "$status" -lt 124 ] || return 1
  if [ "${#args[@]}" -gt 0 ] && [ "$status" != 0 ]; then return 1; fi
  grep -qi -- "${TOOL_EXPECT[$name]}" <<<"$out"
}

tool_runs() { # tool_runs PROGRAM NAME
  probe_output "$1" "$2" >/dev/null
}

working_copy_on_path() { # working_copy_on_path NAME: absolute path of the first working NAME on PATH
  local name=$1 dir program own_bin dirs=()
  own_bin=$(readlink -f "$TOOLS_BIN" 2>/dev/null || printf '%s' "$TOOLS_BIN")
  IFS=: read -ra dirs <<<"$PATH"
  for dir in "${dirs[@]}"; do
    [ -n "$dir" ] && [ -d "$dir" ] || continue
    # .tools/bin itself on PATH must not make .tools/bin/NAME a link to itself.
    [ "$(readlink -f "$dir")" != "$own_bin" ] || continue
    program="$(cd "$dir" && pwd)/$name"
    if tool_runs "$program" "$name"; then
      printf '%s\n' "$program"
      return 0
    fi
  done
  return 1
}

installed_copy() { # installed_copy NAME: NAME's program from its installed Debian package, on PATH or not
  local name=$1 file
  [ "${TOOL_HOW[$name]}" = apt ] || return 1
  command -v dpkg-query >/dev/null 2>&1 || return 1
  while IFS= read -r file; do
    case $file in
      */bin/"$name" | */sbin/"$name")
        if tool_runs "$file" "$name"; then
          printf '%s\n' "$file"
          return 0
        fi
        ;;
    esac
  done < <(dpkg-query -L "${TOOL_PKG[$name]}" 2>/dev/null)
  return 1
}

install_method() { # install_method NAME: how the install step would get NAME, as printed in the plan
  if [ "${TOOL_HOW[$1]}" = unpack ]; then
    printf 'dpkg -x %s into .tools/root\n' "${TOOL_PKG[$1]}"
  else
    printf 'apt-get install %s\n' "${TOOL_PKG[$1]}"
  fi
}

resolve_tool() { # resolve_tool NAME: sets DECISION[NAME] and SOURCE[NAME]
  local name=$1 found
  if tool_runs "$TOOLS_BIN/$name" "$name"; then
    DECISION[$name]=keep
    SOURCE[$name]=$(readlink -f "$TOOLS_BIN/$name")
  elif found=$(working_copy_on_path "$name"); then
    DECISION[$name]=path
    SOURCE[$name]=$found
  elif found=$(installed_copy "$name"); then
    DECISION[$name]=installed
    SOURCE[$name]=$found
  else
    DECISION[$name]=install
    SOURCE[$name]=$(install_method "$name")
  fi
}

resolve_tools() { # resolve_tools NAME...: resolve_tool for each, all at once
  # Concurrently: Postfix's tools answer the usage probe only after msg_fatal's sleep(1).
  local name dir
  dir=$(mktemp -d)
  TEMP_DIRS+=("$dir")
  for name in "$@"; do
    (resolve_tool "$name" && printf '%s\n%s\n' "${DECISION[$name]}" "${SOURCE[$name]}" >"$dir/$name") &
  done
  wait
  for name in "$@"; do
    { read -r "DECISION[$name]" && read -r "SOURCE[$name]"; } <"$dir/$name" 2>/dev/null ||
      { complain "could not resolve $name"; exit 1; }
  done
}

# ---------------------------------------------------------------- writing .tools/bin

link_tool() { # link_tool NAME TARGET
  ln -sfn "$2" "$TOOLS_BIN/$1"
}

write_unpacked_entry() { # write_unpacked_entry NAME: .tools/bin/NAME for the program unpacked into .tools/root
  local name=$1 file=${TOOL_FILE[$1]} libdir=${TOOL_LIBDIR[$1]} tmp
  if [ -z "$libdir" ]; then
    # Relative, so the .tools directory keeps working when the checkout moves.
    link_tool "$name" "../root/$file"
    return
  fi
  tmp=$(mktemp "$TOOLS_BIN/.$name.XXXXXX")
  # The wrapper finds .tools/root from its own real location (a moved checkout, or a symlink to it, still works)
  # and execs, so whoever spawns it gets the tool's own pid.
  cat >"$tmp" <<WRAP
#!/bin/sh
# Written by scripts/$SCRIPT_NAME.sh: runs the unpacked $file with its package's private libraries.
root=\$(dirname "\$(readlink -f "\$0")")/../root
LD_LIBRARY_PATH="\$root/$libdir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$root/$file" "\$@"
WRAP
  chmod 755 "$tmp"
  mv -f "$tmp" "$TOOLS_BIN/$name"
}

# ---------------------------------------------------------------- apt, service starts, daemons

APT_UPDATED=0
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_OURS=0
POLICY_SAVED=""
TEMP_DIRS=()

clean_up_on_exit() {
  allow_service_starts
  if [ "${#TEMP_DIRS[@]}" -gt 0 ]; then rm -rf "${TEMP_DIRS[@]}"; fi
}
trap clean_up_on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The install functions end each step with `|| return 1`: they run on the left of `||`, where bash ignores set -e.

apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq || return 1
    APT_UPDATED=1
  fi
}

INSTALL_LOCK_FD=""
take_install_lock() {
  # Two checkouts installing at once would each swap policy-rc.d and misjudge the other's daemons.
  [ -z "$INSTALL_LOCK_FD" ] || return 0
  mkdir -p /run/lock
  exec {INSTALL_LOCK_FD}>/run/lock/spamtrapd-install-tools.lock
  flock -w 900 "$INSTALL_LOCK_FD" || { complain "another install held /run/lock/spamtrapd-install-tools.lock for 15 min"; exit 1; }
}

deny_service_starts() {
  local status=0 saved
  if [ -x "$POLICY_RC" ]; then
    "$POLICY_RC" spamtrapd-install-probe start >/dev/null 2>&1 || status=$?
    # 101 is invoke-rc.d's "action forbidden": this machine already denies starts, its file stays as it is.
    if [ "$status" = 101 ]; then return 0; fi
  fi
  if [ -e "$POLICY_RC" ] || [ -L "$POLICY_RC" ]; then
    saved=$(mktemp "$POLICY_RC.spamtrapd-saved.XXXXXX") || return 1
    if ! mv -f "$POLICY_RC" "$saved"; then
      rm -f "$saved"
      return 1
    fi
    POLICY_SAVED=$saved
  fi
  POLICY_OURS=1
  printf '#!/bin/sh\n# Written by %s while it runs apt-get, removed when it exits: no service may start.\nexit 101\n' \
    "scripts/$SCRIPT_NAME.sh" >"$POLICY_RC" || return 1
  chmod 755 "$POLICY_RC" || return 1
}

allow_service_starts() { # undoes deny_service_starts; runs again harmlessly from the EXIT trap
  if [ "$POLICY_OURS" = 1 ]; then
    rm -f "$POLICY_RC"
    POLICY_OURS=0
  fi
  if [ -n "$POLICY_SAVED" ]; then
    mv -f "$POLICY_SAVED" "$POLICY_RC"
    POLICY_SAVED=""
  fi
}

pids_of_daemons() { # pids_of_daemons: "PID:NAME" of every running process named in DAEMON_NAMES
  local proc comm name
  [ "${#DAEMON_NAMES[@]}" -gt 0 ] || return 0
  for proc in /proc/[0-9]*; do
    { read -r comm <"$proc/comm"; } 2>/dev/null || continue
    for name in "${DAEMON_NAMES[@]}"; do
      if [ "$comm" = "$name" ]; then printf '%s:%s\n' "${proc#/proc/}" "$comm"; fi
    done
  done
}

process_alive() { # process_alive PID: running, not a zombie waiting for its parent
  local stat state
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  read -r state _ <<<"${stat##*) }"
  [ "$state" != Z ]
}

parent_of() { # parent_of PID
  local stat ppid
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  read -r _ ppid _ <<<"${stat##*) }"
  printf '%s\n' "$ppid"
}

# A service's daemon is run or adopted by init; a haproxy that some test started meanwhile is its child instead.
SERVICE_PARENT_PID=1

stop_daemons_started_since() { # stop_daemons_started_since "PID:NAME lines from before the install"
  local before=$1 entry pid name parent left=() waited
  while IFS= read -r entry; do
    [ -n "$entry" ] || continue
    pid=${entry%%:*}
    name=${entry#*:}
    if grep -qxF -- "$entry" <<<"$before"; then
      complain "note: $name (pid $pid) was running before this install; not ours to stop"
      continue
    fi
    parent=$(parent_of "$pid") || continue
    if [ "$parent" != "$SERVICE_PARENT_PID" ]; then
      complain "note: $name (pid $pid) started meanwhile as a child of pid $parent, not as a service; not ours to stop"
      continue
    fi
    complain "$name (pid $pid) started as a service during the install despite policy-rc.d: stopping it"
    kill "$pid" 2>/dev/null || true
    left+=("$pid")
  done <<<"$(pids_of_daemons)"
  for pid in "${left[@]}"; do
    for waited in 1 2 3 4 5 6 7 8 9 10; do
      process_alive "$pid" || break
      sleep 0.5
    done
    if process_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
}

require_root_for() { # require_root_for NAME...: installing needs root; say which tools are missing otherwise
  local name missing=()
  [ "$(id -u)" = 0 ] && return 0
  for name in "$@"; do missing+=("$name (${TOOL_PKG[$name]})"); done
  complain "need root to install ${missing[*]}; or put a working copy of each on PATH"
  exit 1
}

unpack_package() { # unpack_package PACKAGE: download PACKAGE's .deb and dpkg -x it into .tools/root
  local pkg=$1 dl
  dl=$(mktemp -d) || return 1
  TEMP_DIRS+=("$dl")
  # apt downloads as its _apt user when it can write there, else it warns and downloads as root.
  if id _apt >/dev/null 2>&1; then chown _apt "$dl" || return 1; fi
  apt_update_once || return 1
  (cd "$dl" && apt-get download -qq "$pkg") || return 1
  mkdir -p "$TOOLS_DIR/root" || return 1
  dpkg -x "$dl/$pkg"_*.deb "$TOOLS_DIR/root" || return 1
}

apt_install() { # apt_install PACKAGE...: apt-get install while no service may start, then stop any that did
  local before status=0
  before=$(pids_of_daemons)
  deny_service_starts || return 1
  if apt_update_once; then
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null || status=$?
  else
    status=1
  fi
  allow_service_starts
  stop_daemons_started_since "$before"
  return "$status"
}

# ---------------------------------------------------------------- the whole run

unique_packages() { # unique_packages HOW NAME...: the packages of the NAMEs installed that way, once each
  local how=$1 name
  shift
  for name in "$@"; do
    if [ "${TOOL_HOW[$name]}" = "$how" ]; then printf '%s\n' "${TOOL_PKG[$name]}"; fi
  done | sort -u
}

install_missing_tools() { # install_missing_tools NAME...: every NAME whose decision is install
  local name pkg found packages=()
  require_root_for "$@"
  take_install_lock
  while IFS= read -r pkg; do
    [ -n "$pkg" ] || continue
    unpack_package "$pkg" || { complain "cannot download and unpack $pkg (dpkg -x) for: $*"; exit 1; }
  done <<<"$(unique_packages unpack "$@")"
  for name in "$@"; do
    if [ "${TOOL_HOW[$name]}" = unpack ]; then write_unpacked_entry "$name"; fi
  done
  mapfile -t packages < <(unique_packages apt "$@")
  if [ "${#packages[@]}" -gt 0 ]; then
    apt_install "${packages[@]}" || { complain "apt-get install ${packages[*]} failed (for: $*)"; exit 1; }
    for name in "$@"; do
      [ "${TOOL_HOW[$name]}" = apt ] || continue
      if found=$(installed_copy "$name"); then
        link_tool "$name" "$found"
      else
        complain "apt-get installed ${TOOL_PKG[$name]}, but it has no working $name"
      fi
    done
  fi
}

verify_tools() { # verify_tools NAME...: exit 1 naming every tool whose .tools/bin entry does not answer
  local name out failed=0
  for name in "$@"; do
    if ! out=$(probe_output "$TOOLS_BIN/$name" "$name"); then
      complain "$name does not run (.tools/bin/$name, from ${SOURCE[$name]}): $(head -c 300 <<<"$out" | tr '\n' ' ')"
      failed=1
    fi
  done
  [ "$failed" = 0 ] || exit 1
}

usage() {
  say "usage: scripts/$SCRIPT_NAME.sh [--plan] [TOOL...]"
  say "  Makes .tools/bin/TOOL a working copy of each TOOL (default: all of ${TOOL_NAMES[*]})."
  say "  --plan  print how each tool would be resolved (keep, path, installed, install) and change nothing"
}

resolve_and_install_tools() { # resolve_and_install_tools "$@" of the calling script
  local plan=0 name selected=() to_install=() changed=()
  while [ "$#" -gt 0 ]; do
    case $1 in
      --plan) plan=1 ;;
      -h | --help) usage; return 0 ;;
      -*) complain "unknown option $1"; usage >&2; exit 2 ;;
      *)
        if [ -z "${TOOL_HOW[$1]+set}" ]; then complain "unknown tool $1"; usage >&2; exit 2; fi
        selected+=("$1")
        ;;
    esac
    shift
  done
  if [ "${#selected[@]}" = 0 ]; then selected=("${TOOL_NAMES[@]}"); fi

  resolve_tools "${selected[@]}"
  for name in "${selected[@]}"; do say "$name: ${DECISION[$name]} ${SOURCE[$name]}"; done
  if [ "$plan" = 1 ]; then return 0; fi

  mkdir -p "$TOOLS_BIN"
  for name in "${selected[@]}"; do
    case ${DECISION[$name]} in
      path | installed) link_tool "$name" "${SOURCE[$name]}" ;;
      install) to_install+=("$name") ;;
    esac
  done
  if [ "${#to_install[@]}" -gt 0 ]; then install_missing_tools "${to_install[@]}"; fi
  # A kept tool has just answered its probe; the others are checked where the tests will run them.
  for name in "${selected[@]}"; do
    if [ "${DECISION[$name]}" != keep ]; then changed+=("$name"); fi
  done
  if [ "${#changed[@]}" -gt 0 ]; then verify_tools "${changed[@]}"; fi
  say "ready in $TOOLS_BIN: ${selected[*]}"
}
