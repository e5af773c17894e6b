"""Load with wrk (C, Lua-scripted), closed-loop or paced, so the load generator spends little of the machine's
CPU.

The Python generator (load.py) costs about as much CPU per request as the server does; on a small machine it
becomes the bottleneck it is meant to measure. wrk drives the same scenarios from a Lua script: temporary
redemptions and accruals carry a generated `transaction_eid`, and are committed or cancelled by that eid once
max(64, twice the connections) more of their kind were sent (by then the first request has long been
answered). Answers other than HTTP 200 count as errors, by status (in the `floor` scenario, other than its 400).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

SCRIPT = r"""
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } loyalty_timespec;
           int clock_gettime(int clk, loyalty_timespec *ts); ]]
local ts = ffi.new("loyalty_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

function init(args)
  members = tonumber(args[1]); scenario = args[2]
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[3]
  statuses = {}; seq = 0; holds = {}; accruals = {}
  math.randomseed(os.time() * 1000 + tid * 7919)
  -- Paced runs: this thread's requests are due every `interval` ms; each connection that is free to send
  -- takes the next due slot. With more connections than the rate times the latency, sends keep to the
  -- schedule whatever the answers' latency (an open loop); `late_ms` records how far behind any send was.
  -- Commits and cancels name a hold or accrual sent LAG of its kind earlier: with at most `connections`
  -- requests in flight (each answered within a few times the median latency), that one was answered long ago.
  LAG = math.max(64, 2 * tonumber(args[5] or "0"))
  local rate = tonumber(args[4] or "0")
  interval = rate > 0 and (1000 / rate) or 0
  next_slot = nil; late_ms = 0
end

function delay()
  if interval == 0 then return 0 end
  local now = now_ms()
  local slot = next_slot or now
  next_slot = slot + interval
  local wait = slot - now  -- wrk waits whole milliseconds
  if wait < 0 then
    if -wait > late_ms then late_ms = -wait end
    return 0
  end
  return wait
end


local function who(hot)
  local n = hot and 0 or math.random(0, members - 1)
  return '"loyalty_program_id":123,"matching":"email","email":"m' .. n .. '@bench.example"'
end

local function post(path, body)
  return wrk.format("POST", "/api/v1.1/" .. path, nil, "{" .. body .. "}")
end

local function eid(kind)
  seq = seq + 1
  return kind .. "-" .. tid .. "-" .. seq .. "-" .. math.random(1, 1000000000)
end

local function accrue(hot)
  if hot then return post("loyalty/accrue_points", who(true) .. ',"amount":"1.00"') end
  local id = eid("a")
  table.insert(accruals, id)
  return post("loyalty/accrue_points", who(false) .. ',"amount":"1.00","transaction_eid":"' .. id .. '"')
end

local function redeem(hot)
  return post("loyalty/redeeme_points", who(hot) .. ',"amount":"0.01"')
end

local verified = false

function request()
  if not verified then
    -- wrk calls request() once on the first thread to check the script, and never sends that request:
    -- answer with a read, so no eid is remembered for a commit or cancel of something never sent.
    verified = true
    return post("loyalty/account/balance", who(false))
  end
  if scenario == "balance" then return post("loyalty/account/balance", who(false)) end
  if scenario == "floor" then return post("loyalty/account/balance", who(false) .. ',"points_currency_iid":"none"') end
  if scenario == "accrue" then return accrue(false) end
  if scenario == "redeem" then return redeem(false) end
  if scenario == "hot_member" then
    if math.random() < 0.5 then return accrue(true) else return redeem(true) end
  end
  -- checkout mix: 60% balance, 20% accrue, 15% temp redeem (committed later), 5% cancel of an accrual
  if #holds > LAG then
    return post("loyalty/commit_transaction", '"transaction_eid":"' .. table.remove(holds, 1) .. '"')
  end
  local roll = math.random()
  if roll < 0.60 then return post("loyalty/account/balance", who(false)) end
  if roll < 0.80 then return accrue(false) end
  if roll < 0.95 then
    local id = eid("h")
    table.insert(holds, id)
    return post("loyalty/redeeme_points", who(false) .. ',"amount":"0.01","is_temp":true,"transaction_eid":"' .. id .. '"')
  end
  if #accruals > LAG then
    return post("loyalty/cancel_transaction", '"transaction_eid":"' .. table.remove(accruals, 1) .. '"')
  end
  return accrue(false)
end

function response(status, headers, body)
  if status ~= 200 and not (scenario == "floor" and status == 400) then
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
  if #accruals > 4 * LAG then table.remove(accruals, 1) end
end

function done(summary, latency, requests)
  local errors = {}
  local late = 0
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for k, v in pairs(s) do errors["http_" .. k] = (errors["http_" .. k] or 0) + v end
    local l = thread:get("late_ms")
    if l > late then late = l end
  end
  local parts = {}
  for k, v in pairs(errors) do table.insert(parts, '"' .. k .. '":' .. v) end
  io.write(string.format(
    'WRKJSON {"requests":%d,"seconds":%.3f,"p50_us":%d,"p99_us":%d,"late_ms":%.1f,"errors":{%s}}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), late,
    table.concat(parts, ",")))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def run(base: str, token: str, members: int, scenario: str, clients: int, seconds: float,
        threads: int = 1, rate: float | None = None) -> dict:
    """Summary in load.py's shape: requests, rps, p50_ms, p99_ms, errors; plus the generator used. With `rate`
    the run is paced: requests are sent on a fixed schedule of `rate` per second (`clients` connections must
    be enough that a free one is always there when a send is due; `schedule_lag_ms` says how late any was)."""
    per_thread = (rate / threads) if rate else 0
    with tempfile.TemporaryDirectory(prefix="loyalty-wrk-") as tmp:
        script = Path(tmp) / "scenario.lua"
        script.write_text(SCRIPT)
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
             "-s", str(script), base, "--", str(members), scenario, token, f"{per_thread:.3f}",
             str(clients // threads)],
            capture_output=True, text=True, timeout=seconds + 120, check=True,
        ).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    raw = json.loads(line[len("WRKJSON "):])
    return {"requests": raw["requests"], "rps": round(raw["requests"] / raw["seconds"], 1),
            "p50_ms": round(raw["p50_us"] / 1000, 2), "p99_ms": round(raw["p99_us"] / 1000, 2),
            "errors": raw["errors"], "generator": "wrk",
            **({"schedule_lag_ms": raw["late_ms"]} if rate else {})}
