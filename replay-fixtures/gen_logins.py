#!/usr/bin/env python3
"""Generates the bulk login files of the replay fixtures (deterministic: no randomness).

    python3 replay-fixtures/gen_logins.py   # rewrites mau-month-10500.csv, april-10100-users.csv, trial-mau-cap.csv

(late-login-adjustment.csv is written by hand: ten rows.)
"""
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCAL = timezone(timedelta(hours=8))


def at(t, utc=False):
    return (t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if utc
            else t.isoformat())


def write(name, rows):
    rows.sort(key=lambda r: r[2])  # time order (stable: file order breaks ties)
    with open(HERE / name, "w", newline="\n") as f:
        f.write("sdkappid,user,logged_in_at\n")
        for app, user, t, utc in rows:
            f.write(f"{app},{user},{at(t, utc)}\n")


def mau_month_10500():
    """Two Standard apps in April 2025: 10,500 and 10,503 distinct users, plus repeats."""
    start = datetime(2025, 4, 1, 0, 0, 0, tzinfo=LOCAL)
    rows = []
    for i in range(1, 10501):  # app 201: a new user every 200 s from Apr 1 00:00 local
        rows.append((1400000201, f"a-{i:05}", start + timedelta(seconds=(i - 1) * 200), i == 1))
    for j in range(1, 10504):  # app 202: the same, 100 s later
        t = start + timedelta(seconds=(j - 1) * 200 + 100)
        if j == 10503:  # the last second of April, written in UTC
            t = datetime(2025, 4, 30, 23, 59, 59, tzinfo=LOCAL)
        rows.append((1400000202, f"b-{j:05}", t, j == 10503))
    repeat = datetime(2025, 4, 28, 9, 0, 0, tzinfo=LOCAL)
    for k, i in enumerate(range(50, 10501, 50)):  # 210 repeat logins on app 201
        rows.append((1400000201, f"a-{i:05}", repeat + timedelta(seconds=k * 60), False))
    for k, j in enumerate(range(100, 10504, 100)):  # 105 repeat logins on app 202
        rows.append((1400000202, f"b-{j:05}", repeat + timedelta(seconds=k * 60 + 30), False))
    write("mau-month-10500.csv", rows)


def april_10100_users():
    """One Standard app (1400000900), 10,100 distinct users Apr 1 08:00 .. Apr 8 08:19 local,
    then 101 repeat logins (every 100th user) Apr 8 12:00 .. 13:40. Shared by
    arrears-and-top-up, late-login-adjustment and proration."""
    start = datetime(2025, 4, 1, 8, 0, 0, tzinfo=LOCAL)
    rows = [(1400000900, f"u{i:05}", start + timedelta(seconds=(i - 1) * 60), False) for i in range(1, 10101)]
    repeat = datetime(2025, 4, 8, 12, 0, 0, tzinfo=LOCAL)
    for k, i in enumerate(range(100, 10101, 100)):
        rows.append((1400000900, f"u{i:05}", repeat + timedelta(seconds=k * 60), False))
    write("april-10100-users.csv", rows)


def trial_mau_cap():
    """A Trial app (1400000501): 105 distinct users on Apr 3 from 09:00 local, one a
    minute, then 2 repeat logins of counted users on Apr 20."""
    start = datetime(2025, 4, 3, 9, 0, 0, tzinfo=LOCAL)
    rows = [(1400000501, f"t{i:03}", start + timedelta(minutes=i - 1), False) for i in range(1, 106)]
    rows.append((1400000501, "t001", datetime(2025, 4, 20, 10, 0, 0, tzinfo=LOCAL), False))
    rows.append((1400000501, "t050", datetime(2025, 4, 20, 10, 1, 0, tzinfo=LOCAL), False))
    write("trial-mau-cap.csv", rows)


if __name__ == "__main__":
    mau_month_10500()
    april_10100_users()
    trial_mau_cap()
