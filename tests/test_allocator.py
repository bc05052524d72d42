"""glibc keeping freed memory (`cmr_clip.allocator`), judged by the kernel: a fresh process's resident memory after it
frees a 24 MiB block. With glibc's defaults such a block is mapped on its own and unmapped when freed (the mmap
threshold starts at 128 KiB, glibc's manual); kept, it stays resident for the next batch."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

MIB = 2**20
SETTINGS = ("GLIBC_TUNABLES", "CMR_CLIP_KEEP_FREED_MEMORY", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
PROBE = textwrap.dedent("""
    import os, sys
    {setup}
    def resident():  # bytes, as the kernel counts them
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    block = bytearray(24 * 2**20)  # zero-filled: every page touched
    held = resident()
    del block
    print("RETURNED", held - resident())
""")


def returned_after_free(setup: str = "", env: dict | None = None) -> tuple[int, str]:
    """(bytes the process gave back when it freed the block, everything else it printed)."""
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    done = subprocess.run([sys.executable, "-c", PROBE.format(setup=textwrap.dedent(setup))],
                          env={**clean, **(env or {})}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    returned = next(int(line.split()[1]) for line in lines if line.startswith("RETURNED "))
    return returned, "\n".join(line for line in lines if not line.startswith("RETURNED "))


def test_glibc_defaults_hand_a_freed_block_back():
    returned, _ = returned_after_free()
    assert returned >= 20 * MIB  # the behaviour keep_freed_memory changes, as glibc documents it


def test_keep_freed_memory_keeps_it_resident():
    returned, out = returned_after_free("""
        from cmr_clip.allocator import keep_freed_memory
        print(*keep_freed_memory())
    """)
    assert returned < 4 * MIB
    assert out.startswith("True glibc keeps freed memory") and "CMR_CLIP_KEEP_FREED_MEMORY=0" in out


@pytest.mark.parametrize("env, named", [
    ({"CMR_CLIP_KEEP_FREED_MEMORY": "0"}, "CMR_CLIP_KEEP_FREED_MEMORY=0"),
    # the user's own setting (here: trim at 128 KiB, which also fixes the mmap threshold there) stands
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}, "GLIBC_TUNABLES"),
    ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "MALLOC_TRIM_THRESHOLD_"),
])
def test_an_opt_out_or_the_users_own_settings_leave_glibc_as_it_is(env, named):
    returned, out = returned_after_free("""
        from cmr_clip.allocator import keep_freed_memory
        print(*keep_freed_memory())
    """, env)
    assert returned >= 20 * MIB
    assert out.startswith("False ") and named in out


def test_the_command_line_keeps_freed_memory_but_an_in_process_call_does_not():
    as_command, out = returned_after_free("""
        from cmr_clip import cli
        sys.argv = ["cmr-clip", "--help"]
        cli.main()  # reads sys.argv: the process's own command
    """)
    assert as_command < 4 * MIB and "usage: cmr-clip" in out
    in_process, _ = returned_after_free("""
        from cmr_clip import cli
        cli.main(["--help"])  # a caller's process: left as it is
    """)
    assert in_process >= 20 * MIB
