"""Evaluation: the LLM judge for rubric criteria, suite metrics, reports.

judge: the LLM judge (OpenAI-compatible endpoint or a local policy), the RubricJudge that rubric
grading (agentsd.envs.rubric_grading) takes. metrics: mean score, pass@k, pass^k, per domain,
bootstrap intervals. report: results JSONL, markdown and HTML reports with plots, comparisons.
runner: `agentsd eval`.
Heavy imports (httpx, matplotlib, openpyxl) happen inside the functions that need them.
"""
