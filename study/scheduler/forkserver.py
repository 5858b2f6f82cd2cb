"""A preloaded launcher for the local pool's workers: one fresh forked process per run.

Starting ``python -m study.worker`` costs every run an interpreter, ``import torch`` and
transformers' model modules and a parse of the dataset — seconds on a small machine, more than
5 % of a one-minute run. The fork server pays that once per ``study run``: it is started
with the workers' environment, imports the worker's code, resolves the model classes (built-in,
local folders, hub names found in the local Hugging Face cache — never the network) and loads
the local data of the grid, then forks one child per run. Each child is still a fresh
process of its own — its own pid, session and log, killed alone on a time-out — and runs the
very same ``study.worker.main``, but starts warm.

What a fork cannot change, the server fixes before Python starts and the same for every run:
``PYTHONHASHSEED`` (constant for all runs, see ``launch.PYTHONHASHSEED``), ``OMP_NUM_THREADS``
and ``MKL_NUM_THREADS`` (the pool's threads per run), ``CUBLAS_WORKSPACE_CONFIG``. What differs
per run is set in the child before any CUDA call: ``CUDA_VISIBLE_DEVICES`` (CUDA reads it when
it initialises, which the server never does), ``MASKSTUDY_SLOT``; the child also sizes torch's
and OpenBLAS's thread pools (the server loads OpenBLAS single-threaded: its pool is threads).

Forking is only safe from a process with one thread and no CUDA context, so the server checks
both after warming up (and the thread count before every fork). If either fails it says why
and the pool falls back to starting every worker as a fresh interpreter
(``execution.worker_start: spawn`` asks for that outright).

Wire protocol (JSON lines; the driver writes the server's stdin, reads its stdout):
  server → driver, once:   {"ready": true, "safe": bool, "reason": str}
  driver → server:         {"id": n, "spec": path, "result": path, "log": path, "env": {...}, "name": str}
  server → driver:         {"id": n, "pid": pid}  or  {"id": n, "error": str}
  server → driver, later:  {"exited": pid, "code": returncode (negative: killed by that signal)}
The server exits when its stdin closes (the driver is done or gone), killing children it still
has; it dies with the driver (``PR_SET_PDEATHSIG``) and its children die with it.
"""

from __future__ import annotations

import gc
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

# -- driver side ---------------------------------------------------------------------------------


class ForkServerUnavailable(RuntimeError):
    """The server could not start or found forking unsafe; the reason is the message."""


class ForkedWorker:
    """A run's process as seen by the driver: the subset of ``subprocess.Popen`` the pool uses."""

    def __init__(self, server: ForkServer, pid: int):
        self.server = server
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"forked worker {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode


class ForkServer:
    """Driver-side handle: start the server, ask it for workers, learn how they ended."""

    def __init__(self, warm: dict, env: dict, folder: Path, start_timeout_s: float = 300):
        """``warm``: the grid's distinct task and model configs; ``folder``: where its warm-up plan
        (``forkserver.json``, also on its command line, so ``ps`` tells whose server it is) and
        log (``forkserver.log``) go."""
        self.warm = warm
        self.env = {
            **env,
            # If anything asks torch whether CUDA is available while warming up, answer from NVML,
            # which does not initialise CUDA in the server (that would make forking it unsafe).
            "PYTORCH_NVML_BASED_CUDA_CHECK": "1",
            # OpenBLAS (numpy's, scipy's) starts its thread pool when loaded, which would also make
            # the server unsafe to fork; each child sizes those pools itself (_child).
            "OPENBLAS_NUM_THREADS": "1",
        }
        self.plan_path = Path(folder) / "forkserver.json"
        self.log_path = Path(folder) / "forkserver.log"
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._exits: dict[int, int] = {}
        self._replies: dict[int, dict] = {}
        self._reply_ready = threading.Condition(self._lock)
        self._ready: dict | None = None
        self._next_id = 0
        self.dead = False  # the server is gone: every child it had is gone too (PDEATHSIG)

    def start(self) -> None:
        """Start and warm the server; raises ForkServerUnavailable (with the reason) if it cannot serve."""
        from study.scheduler.launch import die_with_parent

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.plan_path.write_text(json.dumps(self.warm, indent=1))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "study.scheduler.forkserver", str(self.plan_path)], env=self.env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
                preexec_fn=die_with_parent)
        threading.Thread(target=self._read, name="forkserver-reader", daemon=True).start()
        with self._reply_ready:
            ok = self._reply_ready.wait_for(lambda: self._ready is not None or self.dead, self.start_timeout_s)
        if not ok or self._ready is None:
            self.close()
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            why = "did not get ready in time" if not ok else "exited while starting"
            raise ForkServerUnavailable(f"the fork server {why} (log {self.log_path}){': ' + tail if tail else ''}")
        if not self._ready.get("safe"):
            self.close()
            raise ForkServerUnavailable(self._ready.get("reason", "unsafe to fork"))

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._reply_ready:
                if "exited" in msg:
                    self._exits[int(msg["exited"])] = int(msg["code"])
                elif "ready" in msg:
                    self._ready = msg
                elif "id" in msg:
                    self._replies[int(msg["id"])] = msg
                self._reply_ready.notify_all()
        with self._reply_ready:
            self.dead = True
            self._reply_ready.notify_all()

    def launch(self, spec: Path, result: Path, log: Path, env: dict, name: str) -> ForkedWorker:
        """Fork a worker for one run; raises ForkServerUnavailable if the server cannot."""
        if self.dead or self.proc is None:
            raise ForkServerUnavailable("the fork server is not running")
        with self._lock:
            self._next_id += 1
            rid = self._next_id
        request = {"id": rid, "spec": str(spec), "result": str(result), "log": str(log), "env": env, "name": name}
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise ForkServerUnavailable(f"the fork server is gone ({e})") from None
        with self._reply_ready:
            self._reply_ready.wait_for(lambda: rid in self._replies or self.dead, 60)
            reply = self._replies.pop(rid, None)
        if reply is None:
            raise ForkServerUnavailable("the fork server did not answer")
        if "error" in reply:
            raise ForkServerUnavailable(reply["error"])
        return ForkedWorker(self, int(reply["pid"]))

    def exit_code(self, pid: int) -> int | None:
        with self._lock:
            if pid in self._exits:
                return self._exits.pop(pid)
            if self.dead:  # its children were killed with it
                return -signal.SIGKILL
        return None

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()  # the server kills what it still runs and exits
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- server side ---------------------------------------------------------------------------------


def warm_up(warm: dict) -> list[str]:
    """Import what the runs import and load the data they read, when that needs no network.

    Best effort: whatever fails here fails again in the run, where it is reported properly.
    Returns notes on what was skipped or failed (for the server's log).
    """
    notes = []
    import study.train  # noqa: F401  (torch, transformers, the maskers, the metrics)
    from study.env import git_commit

    git_commit()  # cached: the children need not run git twice each
    from study.models import is_hub_source, preload
    from study.protocol import TaskConfig
    from study.tasks import DATASETS, load_task

    for task in warm.get("tasks", []):
        if task.get("dataset") not in DATASETS:
            continue  # the run reports it
        spec = DATASETS.get(task["dataset"])
        if task.get("data_dir") is None and spec.accepts_data_dir:
            continue  # from a hub: a download here would start threads before forking
        try:
            load_task(TaskConfig(**task))
        except Exception as e:  # noqa: BLE001
            notes.append(f"task {task.get('name')}: {type(e).__name__}: {e}")
    for model in warm.get("models", []):
        source = model.get("source", "")
        try:
            # A hub name is read from the local Hugging Face cache only: never the network from here.
            preload(source, local_files_only=is_hub_source(source))
        except Exception as e:  # noqa: BLE001
            notes.append(f"model {model.get('name')}: {type(e).__name__}: {e}")
    forget_device_answers()
    return notes


# transformers caches (functools.lru_cache) its answers about the machine: is CUDA there, which
# flash-attention, bf16, MPS, XPU... Answered in the server, where CUDA is hidden, they would be
# inherited by every forked child, which may see a GPU.
_DEVICE_ANSWER = re.compile(r"cuda|gpu|flash|bf16|fp16|tf32|mps|xpu|npu|hpu|mlu|musa|rocm|triton|kernels|device")


def forget_device_answers() -> list[str]:
    """Clear transformers' cached answers about the device; returns the names cleared."""
    module = sys.modules.get("transformers.utils.import_utils")
    cleared = []
    for name, fn in vars(module or object()).items():
        if _DEVICE_ANSWER.search(name) and hasattr(fn, "cache_clear"):
            fn.cache_clear()
            cleared.append(name)
    return cleared


def fork_safety() -> str:
    """'' if this process may fork workers, else why not."""
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else threading.active_count()
    if threads != 1:
        return (f"the fork server has {threads} threads after warming up ({thread_names()}); "
                "forking it could deadlock a worker")
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        return "CUDA was initialised while warming up; a forked worker could not use the GPU"
    # No test of libcuda.so being mapped: a CUDA build of torch maps it at import without
    # initialising the driver (seen on an H200 with torch 2.11+cu130), and a child may still use it.
    return ""


def thread_names() -> str:
    """Who the extra threads are: Python's own threads by name, and every native thread's name."""
    python = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    native = []
    try:
        for tid in sorted(os.listdir("/proc/self/task")):
            with open(f"/proc/self/task/{tid}/comm") as f:
                native.append(f.read().strip())
    except OSError:
        pass
    return f"Python threads {python or 'none besides main'}; native thread names {native}"


def _write(msg: dict) -> None:
    os.write(1, (json.dumps(msg) + "\n").encode())


def _child(req: dict, server_pid: int) -> None:
    """In the forked child: become the run's own process, then run the worker. Never returns."""
    code = 1
    try:
        os.setsid()  # its own process group: a time-out kills it and whatever it started
        from study.scheduler.launch import die_with_parent, set_process_name

        die_with_parent()
        if os.getppid() != server_pid:
            os._exit(4)
        set_process_name(req["name"])
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)
        os.environ.clear()
        os.environ.update(req["env"])
        os.environ["MASKSTUDY_PARENT_PID"] = str(server_pid)  # the worker's own parent watch
        import torch
        from threadpoolctl import threadpool_limits

        # OMP_*/MKL_* were read when the server loaded torch, OpenBLAS started single-threaded there:
        # size the pools of this run now (no threads exist yet in this process).
        threads = int(req["env"].get("OMP_NUM_THREADS") or 1)
        torch.set_num_threads(threads)
        threadpool_limits(threads, user_api="blas")
        from study import worker

        code = worker.main([req["spec"], req["result"]])
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(warm: dict) -> int:
    notes = warm_up(warm)
    for note in notes:
        print(f"warm-up: {note}", file=sys.stderr, flush=True)
    reason = fork_safety()
    _write({"ready": True, "safe": not reason, "reason": reason})
    if reason:
        return 0
    gc.collect()
    gc.freeze()  # keep the warm objects out of the children's collections (fewer copied pages)
    me = os.getpid()
    children: set[int] = set()
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    buf = b""
    try:
        while True:
            if sel.select(timeout=0.05):
                chunk = os.read(0, 1 << 16)
                if not chunk:
                    break  # the driver closed our stdin, or is gone
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    req = json.loads(line)
                    why = fork_safety()
                    if why:
                        _write({"id": req["id"], "error": why})
                        continue
                    pid = os.fork()
                    if pid == 0:
                        _child(req, me)
                    children.add(pid)
                    _write({"id": req["id"], "pid": pid})
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                children.discard(pid)
                _write({"exited": pid, "code": os.waitstatus_to_exitcode(status)})
    finally:
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when its workers stop
    if len(argv) != 1:
        print("usage: python -m study.scheduler.forkserver WARM_UP_PLAN_JSON  (started by the local pool)",
              file=sys.stderr)
        return 2
    return serve(json.loads(Path(argv[0]).read_text()))


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)
