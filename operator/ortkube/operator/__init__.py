"""The ortkube operator: watches OrtModels and owns what each one needs."""
