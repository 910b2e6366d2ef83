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

# nginx_conf DIR PORT UPSTREAM_PORT…: deploy/nginx.conf on stdout with only its `# test:` lines
# rewritten (as the test harness does: listen port, pid and error log in DIR, the upstreams),
# temp paths in DIR, and `user root` when run as root (nginx would switch to `nobody`)
nginx_conf() {
  local dir=$1 port=$2; shift 2
  if [ "$(id -u)" = 0 ]; then echo "user root;"; fi
  awk -v port="$port" -v dir="$dir" -v ups="$*" '
    /# test: listen/ { print "        listen 127.0.0.1:" port ";"; next }
    /# test: pid/ { print "pid " dir "/nginx.pid;"; next }
    /# test: error_log/ { print "error_log " dir "/error.log warn;"; next }
    /# test: upstream/ {
      if (!done) { n = split(ups, p, " "); for (k = 1; k <= n; k++) print "        server 127.0.0.1:" p[k] " max_fails=1 fail_timeout=5s;"; done = 1 }
      next
    }
    /# test: / { print "deploy/nginx.conf: unknown test marker: " $0 > "/dev/stderr"; exit 1 }
    /^http \{$/ {
      print
      n = split("client_body proxy fastcgi uwsgi scgi", t, " ")
      for (k = 1; k <= n; k++) print "    " t[k] "_temp_path " dir "/" t[k] ";"
      next
    }
    { print }' deploy/nginx.conf
}
