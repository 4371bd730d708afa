# Shared by the bench scripts that start their own relays: a free loopback
# port, waiting until one listens, and the smtp-sink upstream they relay to.
# Sourced, not run.

# A port nothing listens on now.
bench_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits up to 30 s for something to listen on 127.0.0.1:PORT.
bench_wait_port() {
    for _ in $(seq 300); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# Starts smtp-sink on 127.0.0.1:PORT (as nobody when root), its output in
# DIR/sink.out and DIR/sink.err; sets SINK_PID; fails when it does not listen.
bench_start_sink() { # PORT DIR
    local user=()
    [ "$(id -u)" -eq 0 ] && user=(-u nobody)
    smtp-sink "${user[@]}" -m 512 "127.0.0.1:$1" 1024 >"$2/sink.out" 2>"$2/sink.err" &
    SINK_PID=$!
    bench_wait_port "$1" || { echo "smtp-sink did not start: $(cat "$2/sink.err")" >&2; return 1; }
}
