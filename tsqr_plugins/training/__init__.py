"""Retraining TongSearch-QR: Stack Exchange data builders, the paper's reward, GRPO and SFT recipes
on TRL. ``tsqr train data|grpo|sft`` runs them; recipes live in ``training/configs/``."""
