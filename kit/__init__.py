"""The laptop side of the kit: build the Kaggle dataset and notebook, dry-run it, push it."""
