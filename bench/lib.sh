# Shell helpers shared by the bench scripts (sourced).

# a TCP port nothing answers on (a race with another process is unlikely enough here)
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}

# peak RSS (VmHWM) and CPU seconds (utime+stime) of a process
usage() {
  local hwm ticks
  hwm=$(awk '/VmHWM/ {print $2 " " $3}' "/proc/$1/status")
  ticks=$(awk '{print $14 + $15}' "/proc/$1/stat")
  echo "peak RSS $hwm, CPU $(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz}') s"
}

# the release binaries that `cargo build --release` made: they honour CARGO_TARGET_DIR (relative
# to the repository root, where every script runs)
BIN="${CARGO_TARGET_DIR:-target}/release"
