"""What the entry points share on top of the layers below: the one-line-error shell, main's
orchestration, the champion decision, predict's scoring."""
