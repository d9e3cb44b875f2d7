"""Dense bi-encoder training: ICT/BFS pretraining, supervised fine-tuning, a domain-routed MoE, a Mamba encoder.

Subcommands of ``python -m training``: ``dense`` (:mod:`training.dense.cli`), ``moe``
(:mod:`training.dense.moe_cli`) and ``mamba`` (:mod:`training.dense.mamba_cli`);
``python -m training.dense.suite`` runs the whole comparison of issue 5 in one process.
"""
