"""`compile tagger --optimizer ensemble` and `ensemble-apply` from the command line."""

import json
import subprocess
import sys

from medprog.data.meddec import load_meddec, read_submission, write_submission
from medprog.data.synth_meddec import synth_meddec
from medprog.metrics.meddec import score
from medprog.optimizers.ensemble import noisy_member


def medprog(*args):
    return subprocess.run([sys.executable, "-m", "medprog.cli", *map(str, args)], capture_output=True, text=True)


def test_ensemble_compile_and_apply_beat_the_best_member(tmp_path):
    data = tmp_path / "meddec"
    synth_meddec(data, n=80, seed=3)
    notes = load_meddec(data)
    members = []
    for seed in range(3):
        d = tmp_path / f"member{seed}"
        d.mkdir()
        write_submission(d / "predictions.json", noisy_member(notes, seed=seed))
        members.append(d)
    art = tmp_path / "ens"
    r = medprog("compile", "tagger", "--optimizer", "ensemble", "--train", data, "--members", *members,
                "--out", art, "-o", "n_trials=15", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads((art / "report.json").read_text())
    assert report["dev"]["metrics"]["overall"] > max(m["overall"] for m in report["dev_members"])
    assert json.loads((art / "program.json").read_text())["ensemble"] == report["params"]

    out = tmp_path / "test_pred.json"
    r = medprog("ensemble-apply", art, *members, "--out", out, "--gold", data, "--split", "test")
    assert r.returncode == 0, r.stderr
    applied = json.loads(r.stdout)
    test_notes = load_meddec(data, "test")
    best_member = max(score(test_notes, noisy_member(test_notes, seed=s))["overall"] for s in range(3))
    assert applied["overall"] > best_member - 0.05  # tuned on dev, applied to unseen test notes

    bad = medprog("compile", "tagger", "--optimizer", "ensemble", "--train", data, "--members", members[0],
                  "--out", tmp_path / "x")
    assert bad.returncode == 2 and "at least two" in bad.stderr


def test_ensemble_compile_lamar_mode(tmp_path):
    from medprog.optimizers.ensemble import ConsensusParams, consensus

    data = tmp_path / "meddec"
    synth_meddec(data, n=40, seed=4)
    notes = load_meddec(data)
    members = []
    for seed in range(3):
        d = tmp_path / f"member{seed}"
        d.mkdir()
        write_submission(d / "predictions.json", noisy_member(notes, seed=seed))
        members.append(d)
    art = tmp_path / "ens"
    r = medprog("compile", "tagger", "--optimizer", "ensemble", "--train", data, "--members", *members,
                "--out", art, "-o", "n_trials=3", "-o", "mode=lamar", "--json")
    assert r.returncode == 0, r.stderr
    params = json.loads((art / "program.json").read_text())["ensemble"]
    assert params["mode"] == "lamar" and ConsensusParams(**params).mode == "lamar"
    out = tmp_path / "test_pred.json"
    r = medprog("ensemble-apply", art, *members, "--out", out)
    assert r.returncode == 0, r.stderr
    test_members = [read_submission(m / "predictions.json") for m in members]
    assert read_submission(out) == consensus(test_members, ConsensusParams(**params))
    bad = medprog("compile", "tagger", "--optimizer", "ensemble", "--train", data, "--members", *members,
                  "--out", tmp_path / "x", "-o", "mode=lamarr")
    assert bad.returncode == 2 and "'medprog' or 'lamar'" in bad.stderr
