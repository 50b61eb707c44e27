"""Transfer benchmark: the dss-console client against curl, same local real DSS server.

    .venv/bin/python benchmarks/transfer.py [--size-mib 256] [--rounds 3]

Downloads a ticket's big input file and uploads it as a result (export included: anonymised layer
names, rewritten workspace) through the client, and through curl, alternating, and prints
median wall times, client/curl ratios and the client's peak RSS per direction. The client
runs in a child process so its peak RSS is its own (the parent seeds the data).

Targets (issues 2, 17): peak RSS <= 64 MiB each way; download <= 1.10x curl; upload <= 1.25x curl -F
(the upload includes the export; until issue 17 an md5 of each layer's bytes named it, hashed
before the upload could start: 1.6-1.8x curl; the name is now a hash of the file's identity).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 1024 * 1024


def child(mode: str, server: str, session_id: str, ticket: int, target: str) -> None:
    """Runs in a fresh interpreter: one transfer, then report time and peak RSS as JSON."""
    from dss_console.dss import DssClient, RemoteFile

    client = DssClient(server, session_id=session_id)
    if mode == "download":
        listing = client.tickets.inputs(ticket)
        big = next(f for f in listing if f.name.endswith(".nii.gz"))
    started = time.perf_counter()
    if mode == "download":
        client.tickets.download(ticket, RemoteFile(big.index, big.name), Path(target))
    elif mode == "upload":
        client.tickets.upload_results(ticket, target)
    else:  # upload-only: the same layer, no export (no hash), to split the cost
        client.tickets.upload_file(ticket, target, name="layer_000_raw.nii.gz")
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": elapsed, "peak_rss_mib": peak_kib / 1024}))


def write_big_file(path: Path, size_mib: int) -> None:
    # Incompressible, like real image data, and written in chunks (the parent stays small).
    block = os.urandom(CHUNK)
    with open(path, "wb") as out:
        for i in range(size_mib):
            out.write(block[i % 251:] + block[: i % 251])


def time_hash(path: Path) -> float:
    import hashlib

    started = time.perf_counter()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return time.perf_counter() - started


def run_child(mode: str, server: str, session_id: str, ticket: int, target: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, server, session_id,
                          str(ticket), target], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_curl(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, server, session_id, ticket, target = args.child
        child(mode, server, session_id, int(ticket), target)
        return

    from dss_console.dss import DssClient
    from dss_console.sandbox import Sandbox
    from dss_console.workspace import NewLayer, write_workspace

    with tempfile.TemporaryDirectory(prefix="dss-bench-", dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        big = root / "seed" / "big_t1.nii.gz"
        big.parent.mkdir()
        write_big_file(big, args.size_mib)
        hash_seconds = time_hash(big)
        with Sandbox(data_dir=root / "server", tickets=0) as box:
            ticket = box.admin.create_ticket(box.service_hash)
            ws = write_workspace(root / "seed" / f"ticket_{ticket:08d}.itksnap",
                                 [NewLayer(path=big, tags=("T1-MRI",))])
            box.admin.upload_input(ticket, ws)
            cookie = root / "cookies.txt"
            client = DssClient(box.url)
            client.login(box.fresh_token())
            sid = client.session_id or ""
            host = box.url.split("//", 1)[1].split(":")[0]
            cookie.write_text(f"{host}\tFALSE\t/\tFALSE\t0\twebpy_session_id\t{sid}\n")
            # Seed the big input with curl: it streams from disk.
            run_curl(["-b", str(cookie), "-F", f"myfile=@{big}",
                      f"{box.admin_url}/api/tickets/{ticket}/files/input"])
            box.admin.mark_ready(ticket)
            claimed = client.services.claim(box.service_hash, box.provider, "bench")
            assert claimed and claimed.ticket_id == ticket, claimed
            index = [f.name for f in client.tickets.inputs(ticket)].index(big.name)

            dl_client, dl_curl, ul_client, ul_curl, rss_dl, rss_ul = [], [], [], [], [], []
            ul_raw = []
            for round_no in range(args.rounds):
                # Alternate who goes first, and flush the previous round's writes first: a
                # download right after a 256 MiB upload competes with its disk writeback.
                client_first = round_no % 2 == 0
                out_dir = root / f"dl{round_no}"
                out_dir.mkdir()
                os.sync()
                for who in (("client", "curl") if client_first else ("curl", "client")):
                    if who == "client":
                        result = run_child("download", box.url, sid, ticket, str(out_dir))
                        dl_client.append(result["seconds"])
                        rss_dl.append(result["peak_rss_mib"])
                        assert (out_dir / big.name).stat().st_size == big.stat().st_size
                        (out_dir / big.name).unlink()
                    else:
                        dl_curl.append(run_curl(["-b", str(cookie), "-o",
                                                 str(out_dir / "curl.bin"),
                                                 f"{box.url}/api/pro/tickets/{ticket}/files/"
                                                 f"input/{index}"]))
                        (out_dir / "curl.bin").unlink()
                for who in (("client", "curl") if client_first else ("curl", "client")):
                    os.sync()
                    if who == "client":
                        result = run_child("upload", box.url, sid, ticket, str(ws))
                        ul_client.append(result["seconds"])
                        rss_ul.append(result["peak_rss_mib"])
                    else:
                        ul_curl.append(run_curl(
                            ["-b", str(cookie), "-F", f"myfile=@{big}",
                             f"{box.url}/api/pro/tickets/{ticket}/files/results"]))
                os.sync()
                result = run_child("upload-only", box.url, sid, ticket, str(big))
                ul_raw.append(result["seconds"])
                rss_ul.append(result["peak_rss_mib"])

    med = statistics.median
    print(f"transfer benchmark: {args.size_mib} MiB file, {args.rounds} alternating rounds, "
          "real itksnap-dss-server 0.2.0 on 127.0.0.1")
    print(f"download  client {med(dl_client):6.2f} s   curl    {med(dl_curl):6.2f} s   "
          f"ratio {med(dl_client) / med(dl_curl):.2f}x (target <= 1.10)   "
          f"client peak RSS {max(rss_dl):5.1f} MiB (target <= 64)")
    print(f"upload    client {med(ul_client):6.2f} s   curl -F {med(ul_curl):6.2f} s   "
          f"ratio {med(ul_client) / med(ul_curl):.2f}x (target <= 1.25)   "
          f"client peak RSS {max(rss_ul):5.1f} MiB (target <= 64)")
    print(f"  upload without export (no hash): client {med(ul_raw):6.2f} s, "
          f"ratio {med(ul_raw) / med(ul_curl):.2f}x curl -F; SHA-256 of the file alone: "
          f"{hash_seconds:.2f} s")
    print(f"  best of rounds: download {min(dl_client) / min(dl_curl):.2f}x, "
          f"upload {min(ul_client) / min(ul_curl):.2f}x")
    print("  all rounds (s): download client " + " ".join(f"{x:.2f}" for x in dl_client)
          + " | curl " + " ".join(f"{x:.2f}" for x in dl_curl))
    print("                  upload   client " + " ".join(f"{x:.2f}" for x in ul_client)
          + " | curl " + " ".join(f"{x:.2f}" for x in ul_curl))


if __name__ == "__main__":
    main()
