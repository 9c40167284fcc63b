"""Evaluation: rubric grading (programmatic checks and an LLM judge), suite metrics, reports.

grading: a rubric task's criteria -> verdicts and a score. judge: the LLM judge (OpenAI-compatible
endpoint or a local policy). metrics: mean score, pass@k, pass^k, per domain, bootstrap intervals.
report: results JSONL, markdown and HTML reports with plots, comparisons. runner: `agentsd eval`.
Heavy imports (httpx, matplotlib, openpyxl) happen inside the functions that need them.
"""
