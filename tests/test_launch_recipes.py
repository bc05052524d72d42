"""The launch recipes the README names parse: Accelerate configs load, training configs are `TrainConfig`s,
shell scripts are valid bash, and the SLURM training script, run with stand-ins for SLURM's commands,
hands `accelerate launch` a command line that Accelerate's and our parsers accept with the node's rank.
(The array-job preparation script runs for real in tests/test_sharding.py.)"""

import argparse
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import launch_command_parser

from cmr_clip.training import TrainConfig
from cmr_clip.commands.train import add_arguments as add_train_arguments

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RECIPES = sorted(set(re.findall(r"examples/[\w.-]+\.(?:yaml|sbatch|py)", README)))


def test_the_readme_names_the_launch_recipes():
    assert {"examples/accelerate_ddp.yaml", "examples/accelerate_fsdp.yaml", "examples/slurm_train.sbatch",
            "examples/slurm_prepare.sbatch"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_in_the_readme_parses(recipe):
    path = ROOT / recipe
    assert path.is_file(), f"README names {recipe}, which does not exist"
    if recipe.startswith("examples/accelerate_"):
        config = load_config_from_file(str(path))
        assert config.distributed_type in ("MULTI_GPU", "FSDP")
    elif path.suffix == ".yaml":
        assert TrainConfig.from_file(path).epochs > 0
    elif path.suffix == ".sbatch":
        subprocess.run(["bash", "-n", str(path)], check=True)
    else:
        compile(path.read_text(), str(path), "exec")


def test_fsdp_recipe_takes_its_shard_units_from_the_model():
    config = load_config_from_file(str(ROOT / "examples" / "accelerate_fsdp.yaml"))
    assert config.fsdp_config["fsdp_version"] == 2
    assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert "fsdp_transformer_layer_cls_to_wrap" not in config.fsdp_config  # so `_no_split_modules` decides
    assert config.fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"


def stand_in(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


@pytest.mark.parametrize("node", [0, 1])
def test_slurm_training_script_launches_every_node_with_its_rank(tmp_path, node):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in(bin_dir, "scontrol", 'printf "gpu-node-07\\ngpu-node-08\\n"\n')
    stand_in(bin_dir, "srun", f'shift; SLURM_NODEID={node} exec "$@"\n')  # drops --kill-on-bad-exit, runs one node
    stand_in(bin_dir, "accelerate", f'printf "%q " "$@" > {tmp_path}/launched\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-node-[07-08]",
           "SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "4"}
    subprocess.run(["bash", str(ROOT / "examples" / "slurm_train.sbatch"), "examples/train_small.yaml", "--epochs", "3"],
                   cwd=ROOT, env=env, check=True)
    argv = shlex.split((tmp_path / "launched").read_text())
    assert argv[0] == "launch"
    launch = launch_command_parser().parse_args(argv[1:])
    assert launch.config_file == "examples/accelerate_ddp.yaml"
    assert (launch.num_machines, launch.num_processes, launch.machine_rank) == (2, 8, node)
    assert (launch.main_process_ip, launch.main_process_port) == ("gpu-node-07", 29500)
    assert launch.module and launch.training_script == "cmr_clip.training"
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    train_args = parser.parse_args(launch.training_script_args)
    assert train_args.config == "examples/train_small.yaml" and train_args.epochs == 3
