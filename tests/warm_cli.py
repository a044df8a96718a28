"""The real `mvdeploy` process, started from a warm interpreter: what `run_cli` uses.

`python -m mobilevit_deploy.cli` spends two seconds importing PyTorch and the package before it reads
its arguments; the suite starts the CLI about 150 times. A server process per pytest worker imports
`mobilevit_deploy.cli` once (what `python -m mobilevit_deploy.cli` imports before it runs `main`) and
forks one child per call. The child is a separate process as the user's is: its own argv, environment,
working folder and standard streams (the caller's pipes), `runpy` runs the module as `__main__` exactly
as `-m` does, and its exit status is the process's own. What differs is only that the imports were done
before the fork, so:
- a call whose environment changes what Python reads at start-up (PYTHON*: PYTHONPATH for an entry-point
  plugin) runs in a fresh interpreter (`serves`);
- the server refuses to serve, and every call runs in a fresh interpreter, if importing the CLI wrote
  anything to stdout or stderr (a user would see it on every run: the one-line tests must too).
`tests/test_cli.py` compares warm and fresh runs of the same commands byte for byte.
"""
from __future__ import annotations

import os
import pickle
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

COMMAND = ("-m", "mobilevit_deploy.cli")


def cli_command(args) -> list[str]:
    """The command line of `mvdeploy ARGS` in a new interpreter (what a warm run stands for)."""
    return [sys.executable, *COMMAND, *map(str, args)]

SERVER = r"""
import os, pickle, socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
import mobilevit_deploy.cli                       # what `python -m mobilevit_deploy.cli` imports first
sys.stdout.flush(); sys.stderr.flush()
sock.send(b"ready")
quiet = os.open(os.devnull, os.O_WRONLY)           # what the caller reads is the children's own streams
os.dup2(quiet, 1)
os.dup2(quiet, 2)


def child(argv, env, cwd, fds):
    import atexit, runpy, tempfile, threading, traceback
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    if cwd is not None:
        os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None                       # read from TMPDIR again, as a new process does
    sys.path[0] = os.getcwd()                     # -m puts the working folder first
    sys.argv = ["-m", *argv]
    del sys.modules["mobilevit_deploy.cli"]       # run as __main__ only, as -m does (runpy warns otherwise)
    code = 0
    try:
        runpy.run_module("mobilevit_deploy.cli", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    threading._shutdown()                         # what the interpreter does at exit, in its order
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(code)


while True:
    try:
        message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
    except OSError:
        break
    if not message:
        break
    argv, env, cwd = pickle.loads(message)
    pid = os.fork()
    if pid == 0:
        sock.close()
        child(argv, env, cwd, fds)
    for fd in fds:
        os.close(fd)
    sock.send(pickle.dumps(pid))
    _, status = os.waitpid(pid, 0)
    sock.send(pickle.dumps(status))
"""


class WarmCli:
    """A server that forks a `mvdeploy` process per call, for this pytest process."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.env = dict(os.environ)
        said = tempfile.TemporaryFile()            # a file, not a pipe: whatever it writes never blocks it
        self.process = subprocess.Popen([sys.executable, "-c", SERVER, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                        stdout=said, stderr=said, stdin=subprocess.DEVNULL)
        theirs.close()
        self.sock = ours
        ours.settimeout(300)
        try:
            ready = ours.recv(64)
        except OSError:
            ready = b""
        ours.settimeout(None)
        if ready != b"ready":                     # it could not import the CLI: every call runs fresh
            self.chatter = b"the server did not start"
        else:
            said.seek(0)
            self.chatter = said.read()
        said.close()

    @property
    def usable(self) -> bool:
        return not self.chatter and self.process.poll() is None

    def serves(self, env: dict) -> bool:
        """Whether a call with `env` can be a fork of this server: Python reads PYTHON* only at start-up."""
        startup = {k for k in {*env, *self.env} if k.startswith("PYTHON")}
        return self.usable and all(env.get(k) == self.env.get(k) for k in startup)

    def run(self, args: list[str], env: dict, cwd, timeout: float) -> subprocess.CompletedProcess:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        socket.send_fds(self.sock, [pickle.dumps(([str(a) for a in args], env, None if cwd is None else str(cwd)))],
                        [0, out_w, err_w])
        os.close(out_w)
        os.close(err_w)
        pid = pickle.loads(self.sock.recv(1 << 16))
        command = cli_command(args)
        try:
            stdout, stderr = _read_both(out_r, err_r, time.monotonic() + timeout)
        except subprocess.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
            pickle.loads(self.sock.recv(1 << 16))
            raise subprocess.TimeoutExpired(command, timeout) from None
        status = pickle.loads(self.sock.recv(1 << 16))
        return subprocess.CompletedProcess(command, os.waitstatus_to_exitcode(status),
                                           stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    def close(self) -> None:
        self.sock.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _read_both(out_fd: int, err_fd: int, deadline: float) -> tuple[bytes, bytes]:
    """Everything until both pipes close (the child and whatever it started), as `communicate` reads."""
    chunks = {out_fd: [], err_fd: []}
    with selectors.DefaultSelector() as selector:
        for fd in chunks:
            selector.register(fd, selectors.EVENT_READ)
        try:
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired("mvdeploy", 0)
                for key, _ in selector.select(left):
                    data = os.read(key.fd, 1 << 16)
                    if data:
                        chunks[key.fd].append(data)
                    else:
                        selector.unregister(key.fd)
        finally:
            os.close(out_fd)
            os.close(err_fd)
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd])


_server: WarmCli | None = None


def warm_server() -> WarmCli:
    """This process's server, started at the first call."""
    global _server
    if _server is None or _server.process.poll() is not None:
        _server = WarmCli()
    return _server


def stop_server() -> None:
    global _server
    if _server is not None:
        _server.close()
        _server = None

