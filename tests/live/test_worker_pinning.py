"""``--pin-cores`` with Locust workers: the master asks each worker to pin itself to the harness's cores, a worker on
another machine stays put, and each answers with the cores it runs on (the locustfile's messages, in a subprocess:
importing Locust patches the interpreter with gevent)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores this process may use")

WORKER_PROBE = """
import json, os
from types import SimpleNamespace

import harness.kairos_load as k
from servers.cpu_affinity import available_cpus, boot_id, process_cpus


class Runner:
    client_id = "w1"

    def __init__(self):
        self.sent = []

    def send_message(self, kind, data, client_id=None):
        self.sent.append([kind, data])


env = SimpleNamespace(runner=Runner(), parsed_options=None)
session = k.KairosSession(env)
before = available_cpus()
here = boot_id()
out = {"before": before}
for seq, cpus, machine in [(1, [before[0]], here), (2, [before[-1]], here)]:
    session.on_pin(env, SimpleNamespace(data={"seq": seq, "cpus": cpus, "boot_id": machine}))
    out[f"after {seq}"] = process_cpus(os.getpid())
session.on_pin(env, SimpleNamespace(data={"seq": 3, "cpus": None, "boot_id": here}))
out["unpinned"] = process_cpus(os.getpid())
session.on_pin(env, SimpleNamespace(data={"seq": 4, "cpus": [before[0]], "boot_id": "another-kernel"}))
out["elsewhere"] = process_cpus(os.getpid())
session.on_pin(env, SimpleNamespace(data={"seq": 5, "cpus": [max(before) + 4096], "boot_id": here}))
out["bad"] = process_cpus(os.getpid())
out["sent"] = env.runner.sent
print(json.dumps(out))
"""


@two_cores
def test_a_worker_pins_itself_where_it_shares_the_masters_machine_and_answers_with_its_cores():
    proc = subprocess.run([sys.executable, "-c", WORKER_PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    before = out["before"]
    assert out["after 1"] == [before[0]] and out["after 2"] == [before[-1]]
    assert out["unpinned"] == before  # back to the cores from before the first pin, not the first pin's
    assert out["elsewhere"] == before and out["bad"] == before
    answers = [data for kind, data in out["sent"] if kind == "kairos_pinned"]
    assert [a["seq"] for a in answers] == [1, 2, 3, 4, 5] and all(a["worker"] == "w1" for a in answers)
    assert answers[0]["cpus"] == str(before[0]) and answers[1]["cpus"] == str(before[-1])
    assert answers[3] == {"seq": 4, "worker": "w1", "skipped": "another machine"}
    assert "cannot pin to these cores" in answers[4]["error"] and "cpus" not in answers[4]


MASTER_PROBE = """
import json
from locust.runners import MasterRunner

import harness.kairos_load as k


class Master(MasterRunner):
    def __init__(self, answers):
        self.clients = {"w1": None, "w2": None, "w3": None}
        self.answers, self.sent = answers, []

    def send_message(self, kind, data, client_id=None):
        self.sent.append([kind, data, client_id])
        answer = self.answers.get(client_id)
        if answer is not None:  # a worker answers at once; one that does not leaves the master waiting its timeout
            loadgen.on_pinned(None, type("Msg", (), {"data": dict(answer, seq=data["seq"], worker=client_id)})())


k.PIN_TIMEOUT_S = 0.3
runner = Master({"w1": {"cpus": "0"}, "w2": {"skipped": "another machine"}})
loadgen = k.LocustLoadGenerator(type("Env", (), {"runner": runner})())
answers, asked = loadgen.pin_workers((0,))
loadgen.on_pinned(None, type("Msg", (), {"data": {"seq": 0, "worker": "w3", "cpus": "0"}})())  # late, an old seq
info, warnings = k.worker_pinning(answers, asked, (0,))
odd = k.worker_pinning([{"worker": "w1", "cpus": "0-1"}, {"worker": "w2", "error": "nope"}], 2, (0,))
print(json.dumps({"asked": asked, "answers": len(answers), "info": info, "warnings": warnings, "odd": odd,
                  "sent": runner.sent, "kept": len(loadgen._pin_answers)}))
"""


def test_the_master_asks_every_worker_and_says_which_are_pinned_elsewhere_or_silent():
    proc = subprocess.run([sys.executable, "-c", MASTER_PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["asked"] == 3 and out["answers"] == 2 and out["kept"] == 2  # w3's late answer to seq 0 is dropped
    assert {client for _, _, client in out["sent"]} == {"w1", "w2", "w3"}
    assert all(kind == "kairos_pin" and data["cpus"] == [0] and data["boot_id"] for kind, data, _ in out["sent"])
    assert out["info"] == [
        "pinned: worker w1 on cores 0, with the dispatcher",
        "worker w2 runs on another machine: its cores are its own, left as they are",
    ]
    assert out["warnings"] == [
        "1 of 3 workers did not answer within 0.3 s and may share the servers' cores: start them with taskset -c 0"
    ]
    info, warnings = out["odd"]
    assert info == [] and warnings == [
        "worker w1 runs on cores 0-1, not on 0 alone",
        "worker w2 could not be pinned (nope): it shares the servers' cores",
    ]
