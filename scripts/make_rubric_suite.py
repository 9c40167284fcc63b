"""Author the shipped APEX-style suite (envs/suites/apex-mini), in the APEX-Agents release format.

Three worlds (finance, consulting, legal), each a directory of documents (xlsx, docx, csv, json,
markdown) zipped under world_files_zipped/, twelve tasks with rubrics in tasks_and_rubrics.json, and
the gold output files of file-output tasks under gold/<task_id>/. Nine tasks are graded by
programmatic checks alone; three add one criterion for the LLM judge. Re-running rewrites the suite
(office files carry fixed timestamps, zips fixed dates, so unchanged content gives unchanged bytes).

usage: python scripts/make_rubric_suite.py
"""

# ruff: noqa: E501 - task prompts and rubric texts are data; wrapping them hurts reading
from __future__ import annotations

import datetime
import io
import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from agentsd.envs.apex import zip_world
from agentsd.envs.documents import build

OUT = Path(__file__).resolve().parent.parent / "envs" / "suites" / "apex-mini"
FIXED = datetime.datetime(2026, 1, 1)


def deterministic(data: bytes) -> bytes:
    """An Office file (a zip) with fixed entry dates and fixed core-property timestamps."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in sorted(source.infolist(), key=lambda i: i.filename):
            body = source.read(info)
            if info.filename == "docProps/core.xml":
                text = body.decode()
                import re

                text = re.sub(
                    r"(<dcterms:(?:created|modified)[^>]*>)[^<]*", r"\g<1>2026-01-01T00:00:00Z", text
                )
                body = text.encode()
            entry = zipfile.ZipInfo(info.filename, date_time=(2026, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(entry, body)
    return out.getvalue()


def document(name: str, content: Any) -> bytes:
    text = content if isinstance(content, str) else json.dumps(content)
    data = build(name, text)
    return deterministic(data) if name.endswith((".xlsx", ".docx")) else data


# ---------------------------------------------------------------------------------------- worlds

LEDGER = [
    ["ID", "Date", "Account", "Category", "Amount"],
    ["T-101", "2026-07-03", "4000", "Revenue", 182500],
    ["T-102", "2026-07-08", "6100", "Travel", 3120],
    ["T-103", "2026-07-15", "6200", "Software", 8400],
    ["T-104", "2026-07-21", "4000", "Revenue", 96750],
    ["T-105", "2026-07-30", "6300", "Salaries", 121000],
    ["T-106", "2026-08-04", "6100", "Travel", 1890],
    ["T-107", "2026-08-12", "6400", "Marketing", 14200],
    ["T-108", "2026-08-19", "4000", "Revenue", 143300],
    ["T-109", "2026-08-29", "6300", "Salaries", 121000],
    ["T-110", "2026-09-02", "6100", "Travel", 2740],
    ["T-111", "2026-09-10", "6200", "Software", 2600],
    ["T-112", "2026-09-17", "6400", "Marketing", 9800],
    ["T-113", "2026-09-24", "4000", "Revenue", 158450],
    ["T-114", "2026-09-30", "6300", "Salaries", 124500],
]
BUDGET = "Category,Budget\nTravel,6000\nSoftware,12000\nMarketing,20000\nSalaries,360000\n"
FINANCE = {
    "ledger_q3.xlsx": {"Transactions": LEDGER},
    "budget_q3.csv": BUDGET,
    "fx_rates.json": {"base": "USD", "date": "2026-09-30", "rates": {"EUR": 0.92, "GBP": 0.79}},
    "policies/expense_policy.md": (
        "# Northwind expense policy (2026)\n\n"
        "1. Travel: any single travel transaction above $2,500 requires CFO approval.\n"
        "2. Software: subscriptions above $5,000 per transaction require IT review.\n"
        "3. Marketing spend is approved by the CMO within the quarterly budget.\n"
    ),
    "README.md": "Northwind Traders, finance team share. Q3 2026 = July to September 2026.\n",
}

SURVEY = (
    "Region,Store,Footfall,Revenue,Rent\n"
    "North,N1,41000,512000,96000\nNorth,N2,35500,468000,88000\nNorth,N3,29800,377000,71000\n"
    "South,S1,52000,705000,121000\nSouth,S2,47600,640000,118000\n"
    "East,E1,30500,402000,64000\nEast,E2,33800,455000,69000\nEast,E3,28100,351000,58000\n"
    "West,W1,39900,590000,132000\nWest,W2,36400,548000,127000\n"
)
CONSULTING = {
    "store_survey.csv": SURVEY,
    "market_data.json": {
        "regions": {
            "North": {"population_m": 4.1, "growth_pct": 1.2},
            "South": {"population_m": 5.6, "growth_pct": 0.4},
            "East": {"population_m": 3.3, "growth_pct": 2.9},
            "West": {"population_m": 4.8, "growth_pct": 1.7},
        }
    },
    "client_brief.docx": (
        "# Client brief: Meridian Retail expansion\n"
        "Meridian wants to open new stores in one region in 2027.\n"
        "The board asks for the region with the best economics of existing stores, measured as "
        "average revenue per store, and wants the main risks named.\n"
        "| Owner | Due |\n| COO Dana Reyes | 2026-12-15 |\n"
    ),
    "notes/interview_notes.md": (
        "# Interviews (October 2026)\n\n"
        "- Regional manager South: rents in the South rose 9% this year and landlords want 10-year leases.\n"
        "- Regional manager East: footfall is growing with the new rail line; staffing is hard.\n"
        "- Head of logistics: the West warehouse is at capacity; new West stores need a second depot.\n"
    ),
}

CONTRACT_MSA = (
    "# Master Services Agreement\n"
    "This Master Services Agreement is made between Acme Corp (Customer) and Globex Ltd (Supplier), "
    "effective 2025-03-01 (the Effective Date).\n"
    "## 1. Term\n"
    "The agreement runs for twenty-four (24) months from the Effective Date.\n"
    "## 2. Termination\n"
    "Either party may terminate for convenience on ninety (90) days' written notice.\n"
    "## 3. Liability\n"
    "Each party's aggregate liability is capped at USD 500,000.\n"
    "## 4. Governing law\n"
    "This agreement is governed by the laws of the State of Delaware.\n"
)
CONTRACT_NDA = (
    "# Mutual Non-Disclosure Agreement\n"
    "Between Acme Corp and Initech Inc, effective 2024-06-15.\n"
    "## 1. Term\n"
    "This agreement remains in force for three (3) years from its effective date.\n"
    "## 2. Governing law\n"
    "The laws of the State of New York govern this agreement.\n"
)
REGISTER = [
    ["Contract", "Counterparty", "Start", "End", "Governing law"],
    ["Master Services Agreement", "Globex Ltd", "2025-03-01", "", ""],
    ["Mutual NDA", "Initech Inc", "2024-06-15", "", "New York"],
    ["Lease (HQ)", "Umbrella Properties", "2023-01-01", "2027-12-31", "Delaware"],
]
LEGAL = {
    "contracts/msa_acme_globex.docx": CONTRACT_MSA,
    "contracts/nda_acme_initech.docx": CONTRACT_NDA,
    "contract_register.xlsx": {"Register": REGISTER},
    "memo_request.md": (
        "From: General Counsel\n\nPlease keep the contract register complete (end dates and governing "
        "law from the contracts themselves) and prepare notices when I ask.\n"
    ),
}
WORLDS = {"northwind-finance": FINANCE, "meridian-consulting": CONSULTING, "acme-legal": LEGAL}


# ---------------------------------------------------------------------------------------- tasks


def item(cid: str, text: str, check: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"verifier_id": cid, "criteria": text, **extra}
    if check is not None:
        out["check"] = check
    return out


REV = 182500 + 96750 + 143300 + 158450  # 581000
EXP = 3120 + 8400 + 121000 + 1890 + 14200 + 121000 + 2740 + 2600 + 9800 + 124500  # 409250
NET = REV - EXP  # 171750

TASKS: list[dict[str, Any]] = [
    {
        "task_id": "fin-q3-revenue",
        "world_id": "northwind-finance",
        "domain": "finance",
        "prompt": "What was Northwind's total revenue in Q3 2026 according to the ledger? Answer with the amount in USD.",
        "task_input_files": ["ledger_q3.xlsx"],
        "expected_output": "message_in_console",
        "gold_response": f"Total Q3 2026 revenue was ${REV:,} (four revenue transactions).",
        "gold_response_type": "text",
        "rubric": [
            item(
                "rev-total",
                f"States total Q3 revenue of ${REV:,}",
                {"kind": "numeric_within", "value": REV, "tolerance": 0.5},
            ),
            item(
                "rev-usd",
                "Gives the amount in US dollars",
                {"kind": "regex", "pattern": r"\$|USD|dollar", "flags": "i"},
                primary=False,
            ),
        ],
    },
    {
        "task_id": "fin-cfo-approvals",
        "world_id": "northwind-finance",
        "domain": "finance",
        "prompt": "Under the expense policy, which Q3 transactions needed CFO approval? List their IDs.",
        "task_input_files": ["ledger_q3.xlsx", "policies/expense_policy.md"],
        "expected_output": "message_in_console",
        "gold_response": "T-102 ($3,120 travel) and T-110 ($2,740 travel) exceed the $2,500 travel threshold.",
        "gold_response_type": "text",
        "rubric": [
            item("t102", "Lists T-102", {"kind": "contains", "text": "T-102"}),
            item("t110", "Lists T-110", {"kind": "contains", "text": "T-110"}),
            item(
                "no-t106",
                "Wrongly lists T-106 (travel below the threshold)",
                {"kind": "contains", "text": "T-106"},
                negative=True,
            ),
        ],
    },
    {
        "task_id": "fin-budget-variance",
        "world_id": "northwind-finance",
        "domain": "finance",
        "prompt": "Build variance.xlsx with one row per budget category: category, budget, actual Q3 spend "
        "from the ledger, and variance (budget minus actual).",
        "task_input_files": ["ledger_q3.xlsx", "budget_q3.csv"],
        "expected_output": "make_new_file",
        "expected_output_path": "variance.xlsx",
        "gold_files": "gold/fin-budget-variance",
        "gold_response": "variance.xlsx written.",
        "gold_response_type": "file",
        "rubric": [
            item("file", "variance.xlsx exists", {"kind": "file_exists", "path": "variance.xlsx"}),
            item(
                "travel-actual",
                "Travel actual is $7,750",
                {
                    "kind": "regex",
                    "source": "variance.xlsx",
                    "pattern": r"Travel\t6000(?:\.0+)?\t7750(?:\.0+)?\t",
                },
            ),
            item(
                "salaries-var",
                "Salaries variance is -$6,500",
                {
                    "kind": "regex",
                    "source": "variance.xlsx",
                    "pattern": r"Salaries\t360000(?:\.0+)?\t366500(?:\.0+)?\t-6500\b",
                },
            ),
            item(
                "software-var",
                "Software variance is $1,000",
                {
                    "kind": "regex",
                    "source": "variance.xlsx",
                    "pattern": r"Software\t12000(?:\.0+)?\t11000(?:\.0+)?\t1000\b",
                },
            ),
        ],
    },
    {
        "task_id": "fin-net-income-memo",
        "world_id": "northwind-finance",
        "domain": "finance",
        "prompt": "Write cfo_memo.docx for the CFO: Q3 2026 net income (revenue minus all expenses) in USD "
        "and converted to EUR at the rate in fx_rates.json, with a one-line recommendation.",
        "task_input_files": ["ledger_q3.xlsx", "fx_rates.json"],
        "expected_output": "make_new_file",
        "expected_output_path": "cfo_memo.docx",
        "gold_files": "gold/fin-net-income-memo",
        "gold_response": "cfo_memo.docx written.",
        "gold_response_type": "file",
        "rubric": [
            item(
                "usd",
                f"States net income of ${NET:,}",
                {"kind": "numeric_within", "source": "cfo_memo.docx", "value": NET, "tolerance": 0.5},
            ),
            item(
                "eur",
                f"States net income of about EUR {NET * 0.92:,.0f}",
                {"kind": "numeric_within", "source": "cfo_memo.docx", "value": NET * 0.92, "tolerance": 1.0},
            ),
            item(
                "tone",
                "The memo is addressed to the CFO and ends with a concrete recommendation",
                primary=False,
            ),
        ],
    },
    {
        "task_id": "con-best-region",
        "world_id": "meridian-consulting",
        "domain": "consulting",
        "prompt": "Which region has the highest average revenue per store in the store survey? Give the region and its average.",
        "task_input_files": ["store_survey.csv"],
        "expected_output": "message_in_console",
        "gold_response": "South: average revenue per store $672,500.",
        "gold_response_type": "text",
        "rubric": [
            item("region", "Names the South region", {"kind": "regex", "pattern": r"\bSouth\b"}),
            item(
                "avg",
                "States the South average of $672,500",
                {"kind": "numeric_within", "value": 672500, "tolerance": 0.5},
            ),
        ],
    },
    {
        "task_id": "con-region-summary",
        "world_id": "meridian-consulting",
        "domain": "consulting",
        "prompt": 'Write region_summary.json mapping each region to {"stores": number of stores, "revenue": total revenue}.',
        "task_input_files": ["store_survey.csv"],
        "expected_output": "make_new_file",
        "expected_output_path": "region_summary.json",
        "gold_files": "gold/con-region-summary",
        "gold_response": "region_summary.json written.",
        "gold_response_type": "file",
        "rubric": [
            item(
                "north",
                "North: 3 stores, revenue 1,357,000",
                {
                    "kind": "json_path_equals",
                    "path": "region_summary.json",
                    "json_path": "North.revenue",
                    "value": 1357000,
                },
            ),
            item(
                "east-stores",
                "East has 3 stores",
                {
                    "kind": "json_path_equals",
                    "path": "region_summary.json",
                    "json_path": "East.stores",
                    "value": 3,
                },
            ),
            item(
                "west",
                "West revenue is 1,138,000",
                {
                    "kind": "json_path_equals",
                    "path": "region_summary.json",
                    "json_path": "West.revenue",
                    "value": 1138000,
                },
            ),
            item(
                "south",
                "South revenue is 1,345,000",
                {
                    "kind": "json_path_equals",
                    "path": "region_summary.json",
                    "json_path": "South.revenue",
                    "value": 1345000,
                },
            ),
        ],
    },
    {
        "task_id": "con-growth",
        "world_id": "meridian-consulting",
        "domain": "consulting",
        "prompt": "According to market_data.json, which region's population grows fastest, and at what rate?",
        "task_input_files": ["market_data.json"],
        "expected_output": "message_in_console",
        "gold_response": "East, at 2.9% a year.",
        "gold_response_type": "text",
        "rubric": [
            item("east", "Names East", {"kind": "regex", "pattern": r"\bEast\b"}),
            item("rate", "States 2.9%", {"kind": "numeric_within", "value": 2.9, "tolerance": 0.001}),
        ],
    },
    {
        "task_id": "con-recommendation",
        "world_id": "meridian-consulting",
        "domain": "consulting",
        "prompt": "Write recommendation.md for the COO: recommend the expansion region by average revenue per store "
        "(state the figure) and name the main risk for that region from the interview notes.",
        "task_input_files": ["store_survey.csv", "notes/interview_notes.md", "client_brief.docx"],
        "expected_output": "make_new_file",
        "expected_output_path": "recommendation.md",
        "gold_files": "gold/con-recommendation",
        "gold_response": "recommendation.md written.",
        "gold_response_type": "file",
        "rubric": [
            item(
                "region",
                "Recommends the South",
                {"kind": "regex", "source": "recommendation.md", "pattern": r"\bSouth\b"},
            ),
            item(
                "figure",
                "States $672,500 average revenue per store",
                {"kind": "numeric_within", "source": "recommendation.md", "value": 672500, "tolerance": 0.5},
            ),
            item(
                "risk",
                "Names rising rents (9%) or long leases as the South's main risk",
                {"kind": "regex", "source": "recommendation.md", "pattern": r"rent|lease", "flags": "i"},
            ),
            item("coo", "Is addressed to the COO and written as a clear recommendation", primary=False),
        ],
    },
    {
        "task_id": "leg-liability-cap",
        "world_id": "acme-legal",
        "domain": "legal",
        "prompt": "What is the liability cap in the Acme-Globex Master Services Agreement?",
        "task_input_files": ["contracts/msa_acme_globex.docx"],
        "expected_output": "message_in_console",
        "gold_response": "USD 500,000 aggregate per party (section 3).",
        "gold_response_type": "text",
        "rubric": [
            item(
                "cap",
                "States a cap of USD 500,000",
                {"kind": "numeric_within", "value": 500000, "tolerance": 0.5},
            )
        ],
    },
    {
        "task_id": "leg-nda-expiry",
        "world_id": "acme-legal",
        "domain": "legal",
        "prompt": "On what date does the Acme-Initech NDA expire, and which law governs it? Dates as YYYY-MM-DD.",
        "task_input_files": ["contracts/nda_acme_initech.docx"],
        "expected_output": "message_in_console",
        "gold_response": "It expires on 2027-06-15; New York law governs it.",
        "gold_response_type": "text",
        "rubric": [
            item(
                "date",
                "States the expiry 2027-06-15 (three years from 2024-06-15)",
                {"kind": "regex", "pattern": r"2027-06-1[45]"},
            ),
            item("law", "Names New York law", {"kind": "contains", "text": "New York"}),
        ],
    },
    {
        "task_id": "leg-register",
        "world_id": "acme-legal",
        "domain": "legal",
        "prompt": "Complete contract_register.xlsx: fill in the Globex MSA's end date (YYYY-MM-DD) and governing "
        "law from the contract; keep every other row as it is.",
        "task_input_files": ["contract_register.xlsx", "contracts/msa_acme_globex.docx"],
        "expected_output": "edit_existing_file",
        "expected_output_path": "contract_register.xlsx",
        "gold_files": "gold/leg-register",
        "gold_response": "Register updated.",
        "gold_response_type": "file",
        "rubric": [
            item(
                "end",
                "The Globex row ends 2027-03-01 (or 2027-02-28)",
                {
                    "kind": "regex",
                    "source": "contract_register.xlsx",
                    "pattern": r"Globex Ltd\t2025-03-01\t2027-0(3-01|2-28)",
                },
            ),
            item(
                "law",
                "The Globex row's governing law is Delaware",
                {
                    "kind": "regex",
                    "source": "contract_register.xlsx",
                    "pattern": r"Globex Ltd\t[^\n]*\tDelaware",
                },
            ),
        ],
    },
    {
        "task_id": "leg-termination-notice",
        "world_id": "acme-legal",
        "domain": "legal",
        "prompt": "Draft notice_globex.docx: Acme's notice to Globex terminating the Master Services Agreement for "
        "convenience, giving the contractual notice period.",
        "task_input_files": ["contracts/msa_acme_globex.docx"],
        "expected_output": "make_new_file",
        "expected_output_path": "notice_globex.docx",
        "gold_files": "gold/leg-termination-notice",
        "gold_response": "notice_globex.docx written.",
        "gold_response_type": "file",
        "rubric": [
            item(
                "period",
                "Gives ninety (90) days' notice",
                {"kind": "regex", "source": "notice_globex.docx", "pattern": r"\b90\b|ninety", "flags": "i"},
            ),
            item(
                "parties",
                "Names Globex as the recipient",
                {"kind": "contains", "source": "notice_globex.docx", "text": "Globex"},
            ),
            item(
                "identifies",
                "Identifies the agreement by its name and effective date (2025-03-01)",
                primary=False,
            ),
        ],
    },
]

GOLD = {
    "fin-budget-variance": {
        "variance.xlsx": {
            "Variance": [
                ["Category", "Budget", "Actual", "Variance"],
                ["Travel", 6000, 7750, -1750],
                ["Software", 12000, 11000, 1000],
                ["Marketing", 20000, 24000, -4000],
                ["Salaries", 360000, 366500, -6500],
            ]
        }
    },
    "fin-net-income-memo": {
        "cfo_memo.docx": (
            "# Memo to the CFO: Q3 2026 net income\n"
            f"Q3 2026 net income was USD {NET:,} (revenue {REV:,} minus expenses {EXP:,}).\n"
            f"At the 2026-09-30 rate of 0.92 that is EUR {NET * 0.92:,.2f}.\n"
            "Recommendation: hold Q4 software spend flat while travel stays above budget.\n"
        )
    },
    "con-region-summary": {
        "region_summary.json": json.dumps(
            {
                "North": {"stores": 3, "revenue": 1357000},
                "South": {"stores": 2, "revenue": 1345000},
                "East": {"stores": 3, "revenue": 1208000},
                "West": {"stores": 2, "revenue": 1138000},
            },
            indent=2,
        )
    },
    "con-recommendation": {
        "recommendation.md": (
            "# To the COO: expand in the South\n\n"
            "The South has the best store economics: average revenue per store of $672,500.\n\n"
            "Main risk: rents in the South rose 9% this year and landlords ask for 10-year leases.\n"
        )
    },
    "leg-register": {
        "contract_register.xlsx": {
            "Register": [
                REGISTER[0],
                ["Master Services Agreement", "Globex Ltd", "2025-03-01", "2027-03-01", "Delaware"],
                REGISTER[2],
                REGISTER[3],
            ]
        }
    },
    "leg-termination-notice": {
        "notice_globex.docx": (
            "# Notice of termination\n"
            "To: Globex Ltd\nFrom: Acme Corp\n"
            "Re: Master Services Agreement effective 2025-03-01\n"
            "Acme Corp terminates the Agreement for convenience under section 2, on ninety (90) days' "
            "written notice from the date of this letter.\n"
        )
    },
}


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "world_files_zipped").mkdir(parents=True)
    for world_id, files in WORLDS.items():
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch) / "filesystem"
            for rel, content in files.items():
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(document(rel, content))
            (OUT / "world_files_zipped" / f"{world_id}.zip").write_bytes(zip_world(Path(scratch)))
    for task_id, files in GOLD.items():
        for rel, content in files.items():
            target = OUT / "gold" / task_id / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(document(rel, content))
    (OUT / "tasks_and_rubrics.json").write_text(json.dumps(TASKS, indent=1) + "\n")
    print(f"wrote {len(TASKS)} tasks over {len(WORLDS)} worlds to {OUT}")


if __name__ == "__main__":
    main()
