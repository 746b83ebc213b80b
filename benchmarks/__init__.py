"""Evaluation of models (multiple-choice QA, IMHI, counselling judges, held-out arena) and performance benchmarks."""
