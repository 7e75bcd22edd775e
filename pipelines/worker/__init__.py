"""A warm worker: pays TFX's import cost once and runs each node in a fresh fork.

Every Airflow task runs one TFX node in its own process. A cold process spends 7-14 s importing
TensorFlow, Beam and TFX before the node does any work (design.md, section 4), which on a
cached rerun is nearly all of the run. The worker imports them once and, for each request,
forks a child that runs `mlops node run ...` exactly as a cold process would: own process,
own exit code, own pid file, output streamed back to the task's log. Airflow still sees one
task per node, retries it, times it out and kills it like any other process.

Protocol (Unix socket, one request per connection): the client sends one JSON line
`{"argv": [...], "env": {...}, "cwd": "..."}`; the worker answers with frames
`b"o"` (stdout) or `b"e"` (stderr) + 4-byte length + output bytes, and a final `b"x"` + 4-byte length + exit code.
If the client goes away (task killed or timed out), the node's process group is killed.

The main loop is single-threaded, so forking is safe; the worker exits after `--idle-timeout`
seconds without requests. A change to the project's code changes the socket name, so a stale
worker is never used (it idles out).

Modules: `protocol` (socket path, framing, settings both sides share), `client` (what `mlops`
calls: start a worker, run a command in it, ping or stop it), `server` (the worker process:
preload, accept, fork, relay). The server never imports the CLI: the client names the entry
function (`pipelines.cli:main`) the forked child runs.
"""
