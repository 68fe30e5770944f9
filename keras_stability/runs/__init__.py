"""The results store: where each run lies (`key.RunKey`), its files and their soundness, identity, sharing."""
