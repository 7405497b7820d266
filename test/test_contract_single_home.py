"""One home per convention: no second copy of the contract anywhere in the package.

core/contract.py owns stamp arithmetic, the echo's frame_id markers, message-type normalization
and the topic table; core/config_keys.py owns the unknown-key check. A second copy lets what the
robot does and what the training data says drift apart (issue 14), so this test greps the
package for the telltale shapes of each and names every file:line that has one.
"""
from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "policy_distill_ros"
HOMES = {"core/contract.py", "core/config_keys.py"}

# Files allowed to keep a copy for now. Each entry must say why and is removed once it is not
# needed (test_exemptions_are_still_needed fails on a stale one).
EXEMPT: dict[str, str] = {}

RULES = {
    "stamp arithmetic (core.contract: stamp_ns, stamp_s, ns_to_s, s_to_ns, ...)": [
        r"(?<![\w.])1_?000_?000_?000(?![\w.])",                 # nanoseconds per second
        r"\b10\s*\*\*\s*9\b",
        r"[*/]\s*1e-?9\b|\b1e-?9\s*[*/]",                        # a seconds <-> ns scale
        r"\bnanosec\s*[-+*%]|[-+*%]\s*(?:int\()?[\w.]*\bnanosec\b",
    ],
    "echo frame_id marker (core.contract: echo_frame, is_fallback_frame, ...)": [
        r"""["'](?:withheld,)?fallback["']""",
        r"\bframe(?:_id)?\s*[!=]=|\bframe(?:_id)?\.(?:startswith|endswith)\(",
    ],
    "message-type names (core.contract: normalize_type_name, JOINT_STATE_TYPE, ...)": [
        r"\{[^{}]*\}/(?:msg|\{[^{}]*\})/\{",                    # f"{pkg}/msg/{name}"
        r"\(msg\|srv",                                          # a type-name regex
        r"""["']\w+/msg/\w+["']""",                               # a type name spelled out
    ],
    "topic table (core.contract: TOPIC_TYPES, POLICY_COMMAND, POLICY_ACTION, EPISODE_LABELS)": [
        r"""["'][\w/~]+["']\s*:\s*["']\w+/msg/\w+["']""",       # 'topic': 'pkg/msg/Type'
        r"""["']episode_id["']\s*,\s*["']step["']""",           # the episode layout labels
        r"""["']policy_(?:command|action|enforcement)["']""",     # the policy's own topics
    ],
    "unknown-key check (core.config_keys.check_keys)": [
        r"""f["'].*unknown keys?\b""",
        r"""unknown\w*\s*=\s*(?:sorted\()?\s*set\(\s*(?:d|data|config|cfg)\s*\)""",
    ],
}

# Matches that are not a copy of the convention, with the reason.
NOT_A_COPY = {
    ("core/enforcement.py", "echo frame_id marker"):
        "the timing monitor's state names ('nominal', 'fallback', 'latched'), not a frame_id",
}


def hits(rel: str, text: str) -> list[str]:
    found = []
    for rule, patterns in RULES.items():
        if any(rel == f and rule.startswith(r) for f, r in NOT_A_COPY):
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0] if not line.lstrip().startswith(("f\"", "\"")) else line
            if any(re.search(p, code) for p in patterns):
                found.append(f"{rel}:{lineno}: {rule}: {line.strip()}")
    return found


def package_files() -> dict[str, str]:
    return {p.relative_to(PACKAGE).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(PACKAGE.rglob("*.py"))}


def test_each_convention_has_one_home():
    copies = [h for rel, text in package_files().items() if rel not in HOMES | set(EXEMPT)
              for h in hits(rel, text)]
    assert not copies, "a second copy of the contract; use core/contract.py or " \
                       "core/config_keys.py instead:\n" + "\n".join(copies)


def test_exemptions_are_still_needed():
    files = package_files()
    stale = [rel for rel in EXEMPT if rel not in files or not hits(rel, files[rel])]
    assert not stale, f"remove {stale} from EXEMPT: no copy of the contract left there"


def test_the_rules_catch_the_copies_they_are_for():
    """Each rule on a line of the kind it was written against (so a rule cannot rot silently)."""
    samples = {
        "stamp": ["return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)",
                  "return stamp.sec + stamp.nanosec * 1e-9",
                  "t = clock.now().nanoseconds * 1e-9", "sec, ns = divmod(t, 10 ** 9)"],
        "echo": ['if msg.header.frame_id == "fallback":', "good = not frame.endswith(F)",
                 "FALLBACK_FRAME = 'fallback'"],
        "message-type": ['return f"{parts[0]}/msg/{parts[1]}"',
                         'f"{pkg}/{kind or \'msg\'}/{name}"', 're.compile(r"^(\\w+)/(?:(msg|srv',
                         '    "sensor_msgs/msg/Imu": _imu_decoder,'],
        "topic table": ['    "imu": "sensor_msgs/msg/Imu",',
                        'LABELS = ("episode_id", "step", "stamp_s")',
                        '    action_topic: str = "policy_action"'],
        "unknown-key": ['raise ValueError(f"{where}: unknown keys {unknown}")',
                        "unknown = sorted(set(d) - known)"],
    }
    for rule, lines in samples.items():
        for line in lines:
            found = hits("x.py", line)
            assert any(h.split(": ")[1].startswith(rule) for h in found), (rule, line, found)
    for fine in ["gap_s / deadline_s + 1e-9", "rel_tol=1e-9", "msg.header.frame_id = frame",
                 "stamp.sec, stamp.nanosec = s_to_sec_nanosec(seconds)",
                 "unexpected = sorted(set(state) - set(expected))"]:
        assert not hits("x.py", fine), fine
