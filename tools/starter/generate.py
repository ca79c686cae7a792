#!/usr/bin/env python3
"""Generate the synthetic prompt set behind the shipped starter clustering.

Writes ``train.jsonl`` and ``val.jsonl`` into ``sidecar/data/starter/`` (or the
directory given with ``--out``). Every prompt is built from hand-written
templates and hand-written slot values, drawn with a fixed seed, so the output
is byte-identical on every run. Nothing is downloaded and only the standard
library is used. It lives outside the package: the wheel ships the JSONL files
and the clustering fitted on them, not this generator.

The prompts imitate ordinary LLM traffic across twelve task families. They are
not real traffic and not benchmark data; they exist so the starter clustering
(``sidecar fit`` via ``make starter``) has something sensible to fit on.

Usage::

    python3 tools/starter/generate.py              # rewrites the shipped files
    python3 tools/starter/generate.py --out DIR    # writes them into DIR instead
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SEED = 20240917
TRAIN_PER_FAMILY = 40
VAL_PER_FAMILY = 12
MIN_WORDS = 5
MAX_WORDS = 120
# Two prompts of one family whose word sets overlap more than this are treated
# as near-duplicates and the later one is redrawn.
MAX_JACCARD = 0.7
ATTEMPTS_PER_TEMPLATE = 60
# Share of prompts whose first letter is lower-cased, as people often type.
LOWERCASE_RATE = 0.12

# The package's starter data folder, from tools/starter/ in the repository.
OUT_DIR = Path(__file__).resolve().parents[2] / "sidecar" / "data" / "starter"

_FORMATTER = string.Formatter()
_FIELD_BASE = re.compile(r"[.\[]")
_WORD = re.compile(r"\w+")
# Runs of spaces inside a line (left by empty slot values) and trailing spaces.
_INNER_SPACES = re.compile(r"(?<=\S) {2,}(?=\S)")
_TRAILING_SPACES = re.compile(r" +(?=\n|$)")


Value = str | tuple[str, ...]


@dataclass(frozen=True)
class Grammar:
    """Templates with ``{slot}`` fields and, per slot, the values to fill in.

    A slot's values are strings, tuples of strings (address them as
    ``{slot[0]}``, ``{slot[1]}``: one tuple is drawn per expansion) or a nested
    ``Grammar`` that is expanded afresh. A value of a slot named in ``distinct``
    is used at most once per family, so two prompts never ask the same thing
    with only a modifier changed.
    """

    templates: tuple[str, ...]
    pools: dict[str, Pool]
    distinct: frozenset[str] = frozenset()

    def expand(self, rng: random.Random) -> str:
        return draw(rng.choice(self.templates), self.pools, rng)[0]


Pool = Sequence[Value] | Grammar


def slot_names(template: str) -> list[str]:
    """Base names of the fields in ``template``, in order of first use."""
    names: dict[str, None] = {}
    for _, field_name, _, _ in _FORMATTER.parse(template):
        if field_name:
            names[_FIELD_BASE.split(field_name, maxsplit=1)[0]] = None
    return list(names)


def draw(template: str, pools: dict[str, Pool], rng: random.Random) -> tuple[str, dict[str, Value]]:
    """Fill ``template``; return the text and the value drawn for each slot."""
    values: dict[str, Value] = {}
    for name in slot_names(template):
        pool = pools[name]
        values[name] = pool.expand(rng) if isinstance(pool, Grammar) else rng.choice(pool)
    text = template.format(**values)
    return _TRAILING_SPACES.sub("", _INNER_SPACES.sub(" ", text)).strip(), values


def nums(lo: int, hi: int, step: int = 1) -> list[str]:
    return [str(n) for n in range(lo, hi + 1, step)]


# ---------------------------------------------------------------------------
# Python coding
# ---------------------------------------------------------------------------

PYTHON = Grammar(
    templates=(
        "Write a Python function that {task}.",
        "{ask_how} {howto} in Python?",
        "I'm getting `{bug[0]}` when I run this:\n\n```python\n{bug[1]}\n```\n\n{bug_ask}",
        "Can you refactor this Python code to be more {quality}?\n\n```python\n{snippet}\n```",
        "Explain the difference between {pair[0]} and {pair[1]} in Python, with a short example"
        " of when you'd pick each.",
        "Write a Python script that {script[0]}. Use {script[1]} and{extra}.",
        "Write pytest unit tests for a function that {task}. Make sure to cover {edge}.",
        "python: {howto}{tail}",
        "What's wrong with my code? It should {wrong[0]} but {wrong[1]}.\n\n```python\n"
        "{wrong[2]}\n```",
    ),
    pools={
        "task": [
            "checks whether a string is a palindrome, ignoring punctuation and case",
            "merges two sorted lists into one sorted list without calling sort()",
            "returns the n most common words in a text file",
            "flattens an arbitrarily nested list",
            "validates an IPv4 address",
            "converts a Roman numeral to an integer",
            "splits a list into batches of size n",
            "computes the Levenshtein distance between two strings",
            "parses a duration string like '1h30m' into seconds",
            "removes duplicates from a list while preserving order",
            "finds all prime numbers below n using a sieve",
            "retries another function with exponential backoff",
            "groups a list of transactions by month and sums the amounts",
            "converts a nested dictionary into dotted key paths",
            "checks if two strings are anagrams of each other",
            "returns the longest common prefix of a list of strings",
        ],
        "ask_how": [
            "How do I",
            "What's the cleanest way to",
            "How can I",
            "Is there a simple way to",
        ],
        "howto": [
            "read a large CSV file line by line without loading it all into memory",
            "invert a dictionary so the values become keys",
            "run a few hundred HTTP requests concurrently with asyncio",
            "sort a list of dicts by two keys, one ascending and one descending",
            "pretty-print nested JSON",
            "create a file's parent directories if they don't exist",
            "measure how long a function takes to run",
            "read an environment variable with a default value",
            "write my own context manager",
            "profile the memory usage of a script",
            "accept any number of keyword arguments in a function",
            "parse command line arguments with subcommands",
            "schedule a function to run every 10 minutes",
            "compare two lists and find what was added and removed",
            "send an email with an attachment using smtplib",
            "convert a Unix timestamp to a timezone-aware datetime",
        ],
        "tail": ["", "?", " - whats the best way", " (python 3.11)", " without extra libraries"],
        "bug": [
            (
                "TypeError: 'NoneType' object is not subscriptable",
                "def find_user(users, name):\n"
                "    for u in users:\n"
                "        if u['name'] == name:\n"
                "            return u\n\n"
                "print(find_user(users, 'bob')['email'])",
            ),
            (
                "KeyError: 1042",
                "counts = {}\nfor row in rows:\n    counts[row['user_id']] += 1",
            ),
            (
                "IndexError: list index out of range",
                "nums = [3, 1, 4, 1, 5]\n"
                "for i in range(len(nums)):\n"
                "    if nums[i] > nums[i + 1]:\n"
                "        print(i)",
            ),
            (
                "AttributeError: 'list' object has no attribute 'split'",
                "lines = open('data.txt').readlines()\nwords = lines.split()",
            ),
            (
                "UnboundLocalError: cannot access local variable 'total'",
                "total = 0\n\ndef add(x):\n    total += x\n    return total",
            ),
            (
                "RecursionError: maximum recursion depth exceeded",
                "def fib(n):\n    return fib(n - 1) + fib(n - 2)\n\nprint(fib(10))",
            ),
            (
                "ValueError: invalid literal for int() with base 10: ''",
                "line = '34,,27'\nages = [int(x) for x in line.split(',')]",
            ),
            (
                "TypeError: unhashable type: 'list'",
                "seen = set()\nfor a, b in pairs:\n    seen.add([a, b])",
            ),
            (
                "ModuleNotFoundError: No module named 'yaml'",
                "import yaml\n\nwith open('config.yml') as f:\n    cfg = yaml.safe_load(f)",
            ),
        ],
        "bug_ask": [
            "What am I doing wrong?",
            "Can you explain the error and show the fix?",
            "Why does this happen?",
            "how do i fix this",
        ],
        "quality": ["readable", "Pythonic", "efficient", "testable", "idiomatic"],
        "snippet": [
            "result = []\n"
            "for i in range(len(items)):\n"
            "    if items[i] % 2 == 0:\n"
            "        result.append(items[i] * items[i])",
            "def get_name(d):\n"
            "    if 'name' in d.keys():\n"
            "        return d['name']\n"
            "    else:\n"
            "        return None",
            "f = open('log.txt')\n"
            "data = f.read()\n"
            "f.close()\n"
            "errors = 0\n"
            "for line in data.split('\\n'):\n"
            "    if 'ERROR' in line:\n"
            "        errors = errors + 1",
            "s = ''\nfor word in words:\n    s = s + word + ', '\ns = s[:-2]",
            "def average(xs=[]):\n    xs.append(0)\n    return sum(xs) / len(xs)",
            "if status == 'a' or status == 'b' or status == 'c':\n"
            "    ok = True\nelse:\n    ok = False",
        ],
        "pair": [
            ("a list", "a tuple"),
            ("`is`", "`==`"),
            ("a generator expression", "a list comprehension"),
            ("`__str__`", "`__repr__`"),
            ("threading", "multiprocessing"),
            ("a staticmethod", "a classmethod"),
            ("a shallow copy", "a deep copy"),
            ("dataclasses", "namedtuples"),
            ("asyncio", "threads"),
        ],
        "script": [
            ("downloads every image linked from a web page", "requests and BeautifulSoup"),
            (
                "renames all files in a folder to start with their modification date",
                "pathlib",
            ),
            ("watches a directory and logs every new file", "only the standard library"),
            ("combines a folder of CSV files into one Parquet file", "pandas"),
            ("posts a Slack message when a long-running job finishes", "argparse and requests"),
            ("scrapes a table from a Wikipedia page into a CSV", "requests and pandas"),
            ("backs up a SQLite database to S3 every night", "boto3"),
            ("resizes every JPEG in a folder to 800 pixels wide", "Pillow and argparse"),
        ],
        "extra": [
            " add type hints",
            " add docstrings",
            " log progress with the logging module",
            " handle errors gracefully",
        ],
        "edge": [
            "empty input",
            "invalid input",
            "very large inputs",
            "None values",
            "boundary cases",
            "duplicate entries",
        ],
        "wrong": [
            (
                "print the numbers 1 to 10",
                "it stops at 9",
                "for i in range(1, 10):\n    print(i)",
            ),
            (
                "count how often each word appears",
                "every count comes out as 1",
                "counts = {}\nfor word in text.split():\n    counts[word] = 1",
            ),
            (
                "give every instance its own list of tags",
                "all the instances share one list",
                "class Post:\n    tags = []\n\n    def add_tag(self, tag):\n"
                "        self.tags.append(tag)",
            ),
            (
                "check whether the user typed yes",
                "it is always true",
                "answer = input('Continue? ')\nif answer == 'y' or 'yes':\n    run()",
            ),
            (
                "remove the negative numbers from a list",
                "some negatives are still there afterwards",
                "for n in nums:\n    if n < 0:\n        nums.remove(n)",
            ),
            (
                "build a list of three separate rows",
                "changing one row changes all of them",
                "grid = [[0] * 3] * 3\ngrid[0][0] = 1\nprint(grid)",
            ),
        ],
    },
    distinct=frozenset({"task", "howto", "bug", "snippet", "pair", "script", "wrong"}),
)

# ---------------------------------------------------------------------------
# SQL and data queries
# ---------------------------------------------------------------------------

SQL = Grammar(
    templates=(
        "Write a SQL query against a table `{tbl[0]}` with columns {tbl[1]} to {tbl[2]}.",
        "How do I {sql_howto} in {dialect}?",
        "Why is this query so slow, and how can I speed it up?\n\n```sql\n{slow}\n```\n\n"
        "The table has about {rows} rows{db_note}.",
        "Convert this SQL into pandas code:\n\n```sql\n{simple}\n```",
        "What's the difference between {sqlpair[0]} and {sqlpair[1]} in SQL? When should I use"
        " each one?",
        'In {err[0]} I get the error "{err[1]}" when running a query that {err[2]}. What does'
        " it mean and how do I fix it?",
        "Given the tables {schema[0]}, write a query that {schema[1]}.",
        "sql question: {short_sql}",
        "I have a pandas DataFrame with columns {df[0]}. How do I {df[1]}?",
    ),
    pools={
        "tbl": [
            (
                "orders",
                "`id`, `customer_id`, `total`, `created_at`",
                "find the top 5 customers by total spend in the last 90 days",
            ),
            (
                "employees",
                "`id`, `name`, `department`, `salary`, `hired_on`",
                "get the highest-paid employee in each department",
            ),
            (
                "page_views",
                "`user_id`, `url`, `viewed_at`",
                "count daily active users for the past 30 days",
            ),
            (
                "subscriptions",
                "`user_id`, `plan`, `started_at`, `cancelled_at`",
                "compute the monthly churn rate per plan",
            ),
            (
                "inventory",
                "`sku`, `warehouse`, `quantity`, `updated_at`",
                "list SKUs that are out of stock in every warehouse",
            ),
            (
                "logins",
                "`user_id`, `ip_address`, `success`, `attempted_at`",
                "find users with more than 5 failed logins in any one-hour window",
            ),
            (
                "invoices",
                "`id`, `client_id`, `amount`, `due_date`, `paid_at`",
                "show each client's total overdue amount, oldest first",
            ),
            (
                "ratings",
                "`movie_id`, `user_id`, `stars`, `rated_at`",
                "list movies with at least 100 ratings and an average above 4",
            ),
        ],
        "sql_howto": [
            "calculate a running total",
            "pivot rows into columns",
            "delete duplicate rows but keep the newest one",
            "get the second highest salary per department",
            "generate a series of dates to fill gaps in a report",
            "do an upsert",
            "compute a 7-day moving average",
            "find rows in one table that have no match in another",
            "rank rows within each group",
            "query a field inside a JSON column",
            "split a comma-separated string into rows",
            "find gaps in a sequence of invoice numbers",
            "select a random sample of 1% of rows",
        ],
        "dialect": ["PostgreSQL", "MySQL 8", "SQLite", "BigQuery", "SQL Server", "Snowflake"],
        "slow": [
            "SELECT * FROM events\nWHERE DATE(created_at) = '2024-03-01'\n"
            "ORDER BY created_at DESC;",
            "SELECT u.name, COUNT(*)\nFROM users u\nJOIN orders o ON o.user_id = u.id\n"
            "WHERE o.status LIKE '%shipped%'\nGROUP BY u.name;",
            "SELECT * FROM products\n"
            "WHERE id IN (SELECT product_id FROM reviews WHERE rating < 3);",
            "SELECT DISTINCT customer_id FROM payments WHERE LOWER(email) = 'a@example.com';",
            "SELECT * FROM logs ORDER BY created_at DESC LIMIT 50 OFFSET 200000;",
        ],
        "rows": ["2 million", "50 million", "800k", "300 million", "12 million"],
        "db_note": [
            "",
            " and an index on `created_at`",
            " and no indexes besides the primary key",
            ", running on Postgres 15",
        ],
        "simple": [
            "SELECT region, SUM(revenue) AS total\nFROM sales\nWHERE year = 2023\nGROUP BY region\n"
            "ORDER BY total DESC;",
            "SELECT a.id, a.name, b.score\nFROM players a\n"
            "LEFT JOIN scores b ON a.id = b.player_id;",
            "SELECT category, COUNT(*) FROM items GROUP BY category HAVING COUNT(*) > 10;",
            "SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts) AS rn FROM clicks;",
        ],
        "sqlpair": [
            ("WHERE", "HAVING"),
            ("INNER JOIN", "LEFT JOIN"),
            ("UNION", "UNION ALL"),
            ("a CTE", "a subquery"),
            ("DELETE", "TRUNCATE"),
            ("RANK()", "DENSE_RANK()"),
            ("a clustered index", "a non-clustered index"),
            ("COUNT(*)", "COUNT(column)"),
        ],
        "err": [
            (
                "PostgreSQL",
                'column "o.total" must appear in the GROUP BY clause or be used in an aggregate'
                " function",
                "sums order totals per customer",
            ),
            (
                "MySQL",
                "ERROR 1062 (23000): Duplicate entry '15' for key 'PRIMARY'",
                "copies rows from a staging table",
            ),
            ("SQLite", "ambiguous column name: id", "joins users to orders"),
            (
                "SQL Server",
                "Subquery returned more than 1 value",
                "updates prices from a lookup table",
            ),
            (
                "PostgreSQL",
                "division by zero",
                "calculates a conversion rate per campaign",
            ),
            (
                "BigQuery",
                "Resources exceeded during query execution",
                "orders a huge table without a LIMIT",
            ),
        ],
        "schema": [
            (
                "`students(id, name)`, `courses(id, title)` and"
                " `enrollments(student_id, course_id, grade)`",
                "lists each course with its average grade and number of students, only for"
                " courses with at least 10 students",
            ),
            (
                "`employees(id, name, manager_id, salary)`",
                "shows each employee next to their manager's name and flags anyone who earns"
                " more than their manager",
            ),
            (
                "`sessions(user_id, started_at)` and `purchases(user_id, amount, purchased_at)`",
                "computes, for each signup week, the share of users who bought something within"
                " 7 days of their first session",
            ),
            (
                "`products(id, category)` and `order_items(order_id, product_id, qty, price)`",
                "returns the best-selling product in each category by revenue",
            ),
            (
                "`tickets(id, opened_at, closed_at, priority)`",
                "calculates the median resolution time per priority for last month",
            ),
        ],
        "short_sql": [
            "how do I select rows where a column is null?",
            "count distinct users per day from an events table",
            "what does GROUP BY 1 mean?",
            "difference between CHAR and VARCHAR?",
            "how to get the last inserted id in postgres",
            "is SELECT * really bad practice in production queries?",
            "can a foreign key reference a column that isn't the primary key?",
            "why does NULL = NULL not return true?",
            "best way to store money amounts, DECIMAL or FLOAT?",
            "how do I see which indexes a table has in MySQL",
        ],
        "df": [
            (
                "`date`, `store`, `sales`",
                "get the weekly total sales per store",
            ),
            (
                "`user_id`, `event`, `timestamp`",
                "keep only the first event for each user",
            ),
            (
                "`name`, `age`, `city`",
                "fill missing ages with the median age of each city",
            ),
            (
                "`order_id`, `items` (a list)",
                "turn each item into its own row",
            ),
            (
                "`country`, `year`, `gdp`",
                "reshape it so each year is a column",
            ),
            (
                "`ticker`, `date`, `close`",
                "add a column with the 30-day rolling return per ticker",
            ),
            (
                "`email`, `signup_source`",
                "find email addresses that appear more than once, ignoring case",
            ),
        ],
    },
    distinct=frozenset(
        {"tbl", "sql_howto", "slow", "simple", "sqlpair", "err", "schema", "short_sql", "df"}
    ),
)

# ---------------------------------------------------------------------------
# JavaScript / web debugging
# ---------------------------------------------------------------------------

WEB = Grammar(
    templates=(
        "My React component {react[0]}. Here's the code:\n\n```jsx\n{react[1]}\n```\n\n{web_ask}",
        "Why does this JavaScript print {puzzle[0]} instead of {puzzle[1]}?\n\n"
        "```js\n{puzzle[2]}\n```",
        "How do I {js_howto} in JavaScript{js_tail}",
        'I\'m seeing "{console[0]}" in the browser console when {console[1]}. {web_ask}',
        "CSS question: {css_q}",
        "Explain {js_concept} in JavaScript {audience}.",
        "Convert this callback-based Node.js code to async/await:\n\n```js\n{callback}\n```",
        "What's the best way to {frontend_task} in {framework}? {app}",
        "My {framework} app {perf}. How do I figure out what's causing it?",
    ),
    pools={
        "react": [
            (
                "re-renders in an infinite loop",
                "function Profile({ id }) {\n"
                "  const [user, setUser] = useState(null);\n"
                "  useEffect(() => {\n"
                "    fetch(`/api/users/${id}`).then(r => r.json()).then(setUser);\n"
                "  });\n"
                "  return <div>{user?.name}</div>;\n"
                "}",
            ),
            (
                "doesn't update when I click the button",
                "function Counter() {\n"
                "  let count = 0;\n"
                "  return <button onClick={() => count++}>{count}</button>;\n"
                "}",
            ),
            (
                "shows stale data after the list changes",
                "function PriceList({ items }) {\n"
                "  const [sorted] = useState(items.sort((a, b) => a.price - b.price));\n"
                "  return sorted.map(i => <Row key={i.id} item={i} />);\n"
                "}",
            ),
            (
                "logs a warning about a unique key prop",
                "return (\n  <ul>\n    {todos.map(todo => (\n      <li>{todo.text}</li>\n"
                "    ))}\n  </ul>\n);",
            ),
            (
                "always submits an empty value from the form",
                "function Search() {\n"
                "  const [q, setQ] = useState('');\n"
                "  return (\n"
                "    <form onSubmit={() => search(q)}>\n"
                "      <input value={q} />\n"
                "    </form>\n"
                "  );\n"
                "}",
            ),
        ],
        "web_ask": [
            "What's going on?",
            "How do I fix it?",
            "Any idea what I'm missing?",
            "Please explain what's wrong.",
        ],
        "puzzle": [
            (
                "3 3 3",
                "0 1 2",
                "for (var i = 0; i < 3; i++) {\n  setTimeout(() => console.log(i), 0);\n}",
            ),
            ("[1, 10, 2, 21]", "[1, 2, 10, 21]", "console.log([10, 1, 21, 2].sort());"),
            (
                "undefined",
                "Ana",
                "const user = {\n  name: 'Ana',\n  greet: () => console.log(this.name),\n};\n"
                "user.greet();",
            ),
            ('"12"', "3", "const a = '1';\nconst b = 2;\nconsole.log(a + b);"),
            ("false", "true", "console.log(0.1 + 0.2 === 0.3);"),
            ("[5, NaN]", "[5, 10]", "console.log(['5', '10'].map(parseInt));"),
            (
                "Promise { <pending> }",
                "the parsed JSON",
                "async function load() {\n  return fetch('/data.json').then(r => r.json());\n}\n"
                "console.log(load());",
            ),
        ],
        "js_howto": [
            "deep clone an object",
            "debounce a search input handler",
            "format a date as YYYY-MM-DD by hand",
            "cancel a fetch request that's taking too long",
            "remove duplicates from an array of objects by id",
            "wait for several promises without failing if one rejects",
            "read query string parameters from the current URL",
            "copy text to the clipboard",
            "detect when an element scrolls into view",
            "group an array of objects by a property",
            "upload a file with a progress bar",
            "check if a string is valid JSON",
            "sort an array of objects by a date field",
        ],
        "js_tail": ["?", " without jQuery?", " in a way that works in Safari too?", ""],
        "console": [
            (
                "Access to fetch at 'http://localhost:8000/api' from origin"
                " 'http://localhost:3000' has been blocked by CORS policy",
                "my frontend calls my local API",
            ),
            (
                "Uncaught TypeError: Cannot read properties of undefined (reading 'map')",
                "the page first loads",
            ),
            (
                "Hydration failed because the initial UI does not match what was rendered on the"
                " server",
                "I render the current time in a Next.js page",
            ),
            (
                "SyntaxError: Unexpected token '<', \"<!DOCTYPE \"... is not valid JSON",
                "I call response.json() on my API response",
            ),
            (
                "Mixed Content: The page was loaded over HTTPS, but requested an insecure resource",
                "images load from our CDN",
            ),
            (
                "ResizeObserver loop completed with undelivered notifications",
                "I resize a chart component",
            ),
        ],
        "css_q": [
            "how do I center a div both vertically and horizontally?",
            "why is my flex item overflowing its container instead of shrinking?",
            "how do I make a sticky header that doesn't cover the content when I jump to an"
            " anchor link?",
            "what's the difference between rem and em units, and which should I use for"
            " font sizes?",
            "my z-index isn't working on a dropdown menu, it still shows behind the card below."
            " Why?",
            "how can I make a responsive grid of cards that wrap onto new rows on small screens?",
            "why does my transition not animate when I change display from none to block?",
        ],
        "js_concept": [
            "closures",
            "the event loop",
            "prototypal inheritance",
            "hoisting",
            "the difference between == and ===",
            "promises versus async/await",
            "how `this` is bound",
            "event delegation",
        ],
        "audience": [
            "like I'm a backend developer",
            "with a simple example",
            "to a beginner",
            "and show a common bug it causes",
        ],
        "callback": [
            "fs.readFile('config.json', 'utf8', (err, data) => {\n"
            "  if (err) return console.error(err);\n"
            "  db.connect(JSON.parse(data).url, (err, conn) => {\n"
            "    if (err) return console.error(err);\n"
            "    conn.query('SELECT 1', (err, rows) => console.log(rows));\n"
            "  });\n"
            "});",
            "request(url, function (err, res, body) {\n"
            "  if (err) { callback(err); return; }\n"
            "  parse(body, function (err, result) {\n"
            "    callback(err, result);\n"
            "  });\n"
            "});",
            "getUser(id, (err, user) => {\n"
            "  if (err) return done(err);\n"
            "  getOrders(user.id, (err, orders) => {\n"
            "    if (err) return done(err);\n"
            "    done(null, { user, orders });\n"
            "  });\n"
            "});",
        ],
        "frontend_task": [
            "handle form validation",
            "manage global state",
            "lazy-load routes",
            "fetch data and cache it",
            "add a dark mode toggle",
            "store authentication tokens",
            "write component tests",
        ],
        "framework": ["React", "Vue 3", "Svelte", "Angular", "Next.js"],
        "app": [
            "It's a small internal dashboard.",
            "The app is an e-commerce storefront.",
            "We have about 40 components so far.",
            "",
        ],
        "perf": [
            "feels sluggish when typing in a big form",
            "takes 6 seconds to show anything on mobile",
            "leaks memory when switching between tabs",
            "re-renders the whole page on every keystroke",
            "ships a 4 MB JavaScript bundle",
            "drops frames when scrolling a long list",
        ],
    },
    distinct=frozenset(
        {
            "react",
            "puzzle",
            "js_howto",
            "console",
            "css_q",
            "js_concept",
            "callback",
            "frontend_task",
            "perf",
        }
    ),
)

# ---------------------------------------------------------------------------
# Grade-school math word problems
# ---------------------------------------------------------------------------

KIDS = [
    ("Maria", "She", "she", "her"),
    ("Liam", "He", "he", "his"),
    ("Aisha", "She", "she", "her"),
    ("Kenji", "He", "he", "his"),
    ("Sofia", "She", "she", "her"),
    ("Noah", "He", "he", "his"),
    ("Priya", "She", "she", "her"),
    ("Mateo", "He", "he", "his"),
    ("Chloe", "She", "she", "her"),
    ("Omar", "He", "he", "his"),
]

MATH_WORD = Grammar(
    templates=(
        "{p[0]} has {a} {item}. {p[1]} gives {b} of them to {friend} and then {gets} {c} more."
        " How many {item} does {p[0]} have now?",
        "A {trip[0]} travels at {trip[1]} {unit} per hour. How far does the {trip[0]} go in {hours}"
        " hours?"
        "{follow}",
        "{p[0]} earns ${wage} an hour {job} and works {hrs} hours each week. How much does"
        " {p[2]} earn in {weeks} weeks? {show}",
        "A {recipe[0]} recipe uses {cups} cups of {recipe[1]} to make {batch} {recipe[2]}. How"
        " many cups of {recipe[1]} are needed for {batch2} {recipe[2]}?",
        "There are {cls[0]} students in {group}. {cls[1]}% of them {go}, and the rest take the"
        " bus. How many students take the bus?",
        "{p[0]} buys {qty} {goods} that cost ${price} each and pays with a ${bill} bill. How"
        " much change does {p[2]} get back? {show}",
        "{p[0]} is reading a book with {total} pages and reads {pp} pages a day. After {days}"
        " days, how many pages are left?",
        "A rectangular {yard} is {length} meters long and {width} meters wide. What are its area"
        " and perimeter?{fence}",
        "Quick: what's {x} times {y} plus {z}?",
        "{p[0]} is {age} years old and {p[3]} {elder[0]} is {elder[1]} times as old. How old"
        " will {p[3]} {elder[0]} be in {k} years?",
        "{p[0]} wants a {thing} that costs ${cost}. {p[1]} has saved ${saved} so far and puts"
        " away ${per} every week. How many weeks until {p[2]} can buy it? {show}",
        "Tickets to the {event} cost ${adult} for adults and ${child} for children. How much"
        " does a group of {na} adults and {nc} children pay in total? {show}",
    ),
    pools={
        "p": KIDS,
        "a": nums(20, 60),
        "b": nums(3, 15),
        "c": nums(5, 25),
        "item": ["marbles", "stickers", "apples", "baseball cards", "pencils", "cookies"],
        "friend": ["a classmate", "a neighbor", "a friend", "a cousin", "the teacher"],
        "gets": ["buys", "finds", "wins", "is given"],
        "trip": [
            ("train", "80"),
            ("train", "96"),
            ("cyclist", "15"),
            ("cyclist", "18"),
            ("bus", "45"),
            ("bus", "52"),
            ("ferry", "24"),
            ("delivery truck", "55"),
        ],
        "unit": ["miles", "kilometers"],
        "hours": ["2", "3", "4", "5", "2.5", "1.5"],
        "follow": [
            "",
            " How long would the same distance take at half the speed?",
            " Explain how you got the answer.",
        ],
        "wage": nums(9, 25),
        "job": [
            "at a part-time job",
            "walking dogs",
            "tutoring math",
            "at the library",
            "bagging groceries",
            "babysitting",
        ],
        "hrs": nums(8, 30, 2),
        "weeks": nums(2, 12),
        "show": [
            "",
            "Show your work.",
            "Explain each step.",
            "Please explain it simply, it's for my kid's homework.",
        ],
        "recipe": [
            ("cookie", "flour", "cookies"),
            ("pancake", "milk", "pancakes"),
            ("muffin", "sugar", "muffins"),
            ("granola bar", "oats", "bars"),
            ("lemonade", "lemon juice", "glasses"),
        ],
        "cups": ["2", "3", "1.5", "2.5"],
        "batch": ["24", "12", "18", "36"],
        "batch2": ["60", "48", "30", "72", "90"],
        "cls": [
            ("20", "25"),
            ("20", "40"),
            ("25", "20"),
            ("25", "60"),
            ("30", "10"),
            ("30", "40"),
            ("32", "25"),
            ("40", "15"),
            ("28", "75"),
            ("36", "25"),
            ("24", "50"),
        ],
        "group": [
            "Ms. Lee's class",
            "a fourth-grade class",
            "the school choir",
            "the chess club",
            "Mr. Alvarez's homeroom",
        ],
        "go": ["walk to school", "ride their bikes to school", "get driven by their parents"],
        "qty": nums(2, 6),
        "goods": ["notebooks", "sandwiches", "bus tickets", "packs of gum", "comic books"],
        "price": nums(2, 8),
        "bill": ["50", "100"],
        "total": ["240", "300", "350", "420", "512"],
        "pp": nums(10, 30),
        "days": nums(3, 7),
        "yard": ["garden", "playground", "swimming pool", "parking lot"],
        "length": nums(13, 30),
        "width": nums(3, 12),
        "fence": [
            "",
            " If fencing costs $7 per meter, how much would it cost to fence it?",
            " How many 1-meter square tiles would cover it?",
        ],
        "x": nums(3, 19),
        "y": nums(3, 19),
        "z": nums(2, 50),
        "age": nums(6, 12),
        "elder": [
            ("mother", "3"),
            ("mother", "4"),
            ("father", "4"),
            ("father", "5"),
            ("aunt", "3"),
            ("grandmother", "7"),
            ("grandfather", "6"),
        ],
        "k": nums(2, 10),
        "thing": ["bike", "video game console", "pair of headphones", "telescope", "skateboard"],
        "cost": nums(120, 400, 20),
        "saved": nums(20, 100, 10),
        "per": nums(10, 25, 5),
        "event": ["school play", "zoo", "science museum", "aquarium", "county fair"],
        "adult": nums(12, 30),
        "child": nums(5, 11),
        "na": nums(2, 4),
        "nc": nums(2, 6),
    },
)

# ---------------------------------------------------------------------------
# Advanced math and proofs
# ---------------------------------------------------------------------------

ADVANCED_MATH = Grammar(
    templates=(
        "Prove that {theorem}.",
        "Compute {integral}. Show all the steps.",
        "Find the eigenvalues and eigenvectors of the matrix {matrix}, and say whether it is"
        " diagonalizable.",
        "Explain intuitively why {intuition}, then sketch a rigorous proof.",
        "Let {lemma[0]}. Show that {lemma[1]}.",
        "What is the {transform[0]} of {transform[1]}? Please derive it.",
        "Solve the differential equation {ode[0]} with {ode[1]}.",
        "Does the series {series} converge or diverge? Justify your answer with an appropriate"
        " test.",
        "In {field[0]}, what is {field[1]}? Give a precise definition and one nontrivial example.",
        "{prob}",
        "I'm stuck on this {course} exercise: prove that {theorem}. Can you give me a hint"
        " first rather than the full proof?",
    ),
    pools={
        "theorem": [
            "there are infinitely many primes",
            "the square root of 2 is irrational",
            "every continuous function on a closed interval is bounded",
            "every group of prime order is cyclic",
            "the composition of two injective functions is injective",
            "the harmonic series diverges",
            "every finite integral domain is a field",
            "the real numbers are uncountable",
            "a tree with n vertices has exactly n - 1 edges",
            "the sum of the first n odd numbers is n^2",
            "a bounded monotone sequence of reals converges",
            "every subgroup of a cyclic group is cyclic",
            "the product of two continuous functions is continuous",
            "there is no largest prime gap",
        ],
        "course": ["real analysis", "abstract algebra", "discrete math", "number theory"],
        "integral": [
            "the integral of x^2 e^x dx",
            "the integral from 0 to π of sin^2(x) dx",
            "the integral of 1/(x^2 + 4x + 5) dx",
            "the integral of ln(x)/x dx",
            "the limit as x → 0 of (1 - cos x)/x^2",
            "the double integral of xy over the quarter of the unit disk in the first quadrant",
            "the Taylor series of ln(1 + x) around 0 up to the x^4 term",
            "the integral of e^(-x) sin(x) dx from 0 to infinity",
            "the gradient and Hessian of f(x, y) = x^3 - 3xy + y^2",
        ],
        "matrix": [
            "[[2, 1], [1, 2]]",
            "[[4, -2], [1, 1]]",
            "[[1, 2, 0], [2, 1, 0], [0, 0, 3]]",
            "[[0, 1], [-1, 0]]",
            "[[1, 1], [0, 1]]",
        ],
        "intuition": [
            "the determinant measures how a linear map scales volume",
            "compactness is so useful in analysis",
            "the Fourier transform turns convolution into multiplication",
            "e^(iπ) + 1 = 0",
            "the central limit theorem produces a normal distribution",
            "Cantor's diagonal argument shows the reals are uncountable",
        ],
        "lemma": [
            ("G be a finite group and H a subgroup of G", "the order of H divides the order of G"),
            (
                "f: R → R be differentiable with |f'(x)| ≤ 1 for all x",
                "|f(x) - f(y)| ≤ |x - y| for all real x and y",
            ),
            ("A be a real symmetric matrix", "all eigenvalues of A are real"),
            ("(a_n) be a Cauchy sequence of real numbers", "(a_n) is bounded"),
            ("p be a prime and a an integer not divisible by p", "a^(p-1) ≡ 1 (mod p)"),
            (
                "V be a finite-dimensional vector space and T: V → V a linear map",
                "T is injective if and only if T is surjective",
            ),
        ],
        "transform": [
            ("Laplace transform", "f(t) = t sin(t)"),
            ("Laplace transform", "f(t) = e^(-at) cos(bt)"),
            ("Fourier transform", "a rectangular pulse of width 2 centred at 0"),
            ("Fourier transform", "the Gaussian e^(-x^2)"),
            ("z-transform", "the sequence a^n u[n]"),
        ],
        "ode": [
            ("y'' + 4y = 0", "y(0) = 1 and y'(0) = 0"),
            ("dy/dx = xy", "y(0) = 2"),
            ("y' + 2y = e^(-x)", "y(0) = 0"),
            ("y'' - 3y' + 2y = 0", "y(0) = 0 and y'(0) = 1"),
            ("dy/dt = ky(1 - y/M)", "y(0) = y0, and interpret the solution"),
        ],
        "series": [
            "Σ 1/(n ln n) from n = 2",
            "Σ (-1)^n / √n",
            "Σ n! / n^n",
            "Σ sin(n) / n^2",
            "Σ 2^n / n^3",
            "Σ 1/n^(1 + 1/n)",
        ],
        "field": [
            ("algebraic topology", "the fundamental group"),
            ("measure theory", "a sigma-algebra"),
            ("number theory", "quadratic reciprocity"),
            ("functional analysis", "the Hahn–Banach theorem"),
            ("probability theory", "a martingale"),
            ("category theory", "a natural transformation"),
            ("differential geometry", "a connection on a vector bundle"),
            ("complex analysis", "a meromorphic function"),
        ],
        "prob": [
            "A fair die is rolled until a six appears. What are the expected value and the"
            " variance of the number of rolls?",
            "Two points are chosen uniformly at random on a stick of length 1. What is the"
            " probability that the three pieces can form a triangle?",
            "Show that the number of ways to tile a 2 × n board with dominoes is a Fibonacci"
            " number.",
            "How many subsets of {1, ..., 10} contain no two consecutive integers? Derive a"
            " general formula.",
            "If X and Y are independent exponential random variables with rate λ, what is the"
            " distribution of X - Y?",
            "Find all integer solutions of x^2 - 2y^2 = 1 and explain how they are generated.",
            "What is the expected number of fixed points of a random permutation of n elements?",
            "Prove or disprove: if a_n → 0 then the average (a_1 + ... + a_n)/n → 0.",
            "A coin with unknown bias shows 7 heads in 10 flips. With a uniform prior, what is the"
            " posterior distribution of the bias?",
        ],
    },
    distinct=frozenset(
        {
            "theorem",
            "integral",
            "matrix",
            "intuition",
            "lemma",
            "transform",
            "ode",
            "series",
            "field",
            "prob",
        }
    ),
)

# ---------------------------------------------------------------------------
# Science Q&A
# ---------------------------------------------------------------------------

SCIENCE = Grammar(
    templates=(
        "Why {why}?",
        "Explain how {process} works{level}.",
        "What is the difference between {sci[0]} and {sci[1]}?",
        "How does {effect[0]} affect {effect[1]}?",
        "Can you explain {concept[0]} in simple terms? I'm studying for {concept[1]}.",
        "What would happen if {whatif}?",
        "How do scientists know {evidence}? What's the actual evidence?",
        "Describe the role of {role[0]} in {role[1]}.",
        "science question for my {why_short[0]} class: {why_short[1]}",
    ),
    pools={
        "why": [
            "is the sky blue during the day but red at sunset",
            "do we have seasons on Earth",
            "does ice float on water when most solids sink in their liquid",
            "does metal feel colder than wood at the same temperature",
            "do onions make you cry",
            "can't we see stars during the day",
            "does bread go stale",
            "does the Moon always show the same face to Earth",
            "do some animals hibernate while others migrate",
            "does salt melt ice on roads",
        ],
        "why_short": [
            ("geography", "why is the ocean salty but rivers aren't?"),
            ("biology", "how do vaccines train the immune system?"),
            ("physics", "what makes a rainbow form?"),
            ("astronomy", "why do planets orbit in roughly the same plane?"),
            ("physics 101", "what is the difference between heat and temperature?"),
            ("GCSE physics", "why does a balloon stick to the wall after rubbing it on your hair?"),
        ],
        "process": [
            "photosynthesis",
            "an mRNA vaccine",
            "nuclear fusion in the Sun",
            "plate tectonics",
            "the greenhouse effect",
            "CRISPR gene editing",
            "a lithium-ion battery",
            "the human kidney",
            "a refrigerator",
        ],
        "level": [
            "",
            " to a 10-year-old",
            " in a few paragraphs",
            " at a first-year university level",
            ", step by step",
        ],
        "sci": [
            ("a virus", "a bacterium"),
            ("weather", "climate"),
            ("mitosis", "meiosis"),
            ("nuclear fission", "nuclear fusion"),
            ("speed", "velocity"),
            ("an element", "a compound"),
            ("DNA", "RNA"),
            ("a comet", "an asteroid"),
            ("an acid", "a base"),
        ],
        "effect": [
            ("altitude", "the boiling point of water"),
            ("ocean acidification", "coral reefs"),
            ("sleep deprivation", "memory formation"),
            ("the Moon", "ocean tides"),
            ("temperature", "the rate of a chemical reaction"),
            ("deforestation", "local rainfall"),
            ("antibiotic overuse", "bacterial resistance"),
        ],
        "concept": [
            ("entropy", "a thermodynamics exam"),
            ("quantum entanglement", "a modern physics quiz"),
            ("natural selection", "my intro biology final"),
            ("the Doppler effect", "an AP Physics exam"),
            ("electronegativity", "a high school chemistry test"),
            ("general relativity", "an astrophysics midterm"),
            ("Le Chatelier's principle", "a chemistry final"),
            ("osmosis", "a GCSE biology exam"),
            ("half-life", "a nuclear physics quiz"),
        ],
        "whatif": [
            "the Earth stopped rotating",
            "the Moon disappeared",
            "all the ice on Earth melted",
            "you fell into a black hole",
            "humans could photosynthesize",
            "the Sun suddenly vanished",
        ],
        "evidence": [
            "the age of the universe",
            "what the Earth's core is made of",
            "that birds evolved from dinosaurs",
            "how far away distant galaxies are",
            "that the continents move",
        ],
        "role": [
            ("ATP", "cellular respiration"),
            ("hemoglobin", "oxygen transport"),
            ("insulin", "blood sugar regulation"),
            ("chlorophyll", "photosynthesis"),
            ("the ozone layer", "protecting life on Earth"),
            ("enzymes", "digestion"),
            ("mitochondria", "energy production in cells"),
        ],
    },
    distinct=frozenset(
        {"why", "why_short", "process", "sci", "effect", "concept", "whatif", "evidence", "role"}
    ),
)

# ---------------------------------------------------------------------------
# Summarisation of a given passage
# ---------------------------------------------------------------------------

NEWS = Grammar(
    templates=(
        "{plan[0]} said on {weekday} that it will {plan[1]}, a move that {impact}. The"
        " announcement follows {reason}. {critics} Supporters, however, argue that {support}."
        " {closing}",
    ),
    pools={
        "plan": [
            ("The city council of Leeds", "cut weekend bus services by a third next spring"),
            (
                "A regional hospital network in Ontario",
                "replace its paper intake forms with an app",
            ),
            ("The national rail operator", "close ticket offices at 40 smaller stations"),
            ("A mid-sized logistics company in Rotterdam", "move office staff to a four-day week"),
            ("The state education department", "require two hours of coding in every school week"),
            ("One of Europe's largest grocery chains", "stop selling single-use plastic bags"),
            ("A popular music streaming service", "raise the price of its basic plan by 8 percent"),
        ],
        "weekday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
        "impact": [
            "is expected to affect around 40,000 people",
            "could save an estimated 12 million euros a year",
            "has already drawn criticism from unions",
            "analysts described as long overdue",
        ],
        "reason": [
            "two years of falling revenue",
            "an internal review that found widespread inefficiencies",
            "sustained pressure from campaign groups",
            "a public consultation in which most respondents asked for change",
            "rising energy and staffing costs",
        ],
        "critics": [
            "Critics warn that older people and those without smartphones will be left behind.",
            "Opposition members called the plan rushed and said it had not been properly costed.",
            "Several employees said they learned about the change from the press.",
            "Consumer groups say the burden will fall hardest on low-income households.",
        ],
        "support": [
            "the savings will be reinvested in better services",
            "the change simply brings the organisation in line with its peers",
            "doing nothing would have meant deeper cuts later",
            "early pilots showed higher satisfaction among staff and customers",
        ],
        "closing": [
            "A final decision on the details is expected by the end of the quarter.",
            "The changes will be phased in over eighteen months.",
            "Officials said a full impact assessment will be published next month.",
            "",
        ],
    },
)

MEETING = Grammar(
    templates=(
        "Meeting notes, {team} weekly sync. The team discussed {topic[0]}. {person} reported"
        " that {topic[1]}. There was some disagreement about {debate}; {resolution}. Action"
        " items: {act1}, {act2}, and {act3}, all before {deadline}.",
    ),
    pools={
        "team": ["platform", "marketing", "mobile", "customer support", "operations", "product"],
        "topic": [
            (
                "the delayed Q3 launch",
                "the beta is stable but onboarding still confuses new users",
            ),
            (
                "rising cloud costs",
                "spending is 18% over budget, mostly because of unused test environments",
            ),
            (
                "feedback from the latest customer survey",
                "satisfaction is up, but pricing is still the top complaint",
            ),
            (
                "hiring for two open roles",
                "two candidates are in final rounds and one offer has been declined",
            ),
            (
                "the migration to the new CRM",
                "about 70% of records have been moved and the rest need manual cleanup",
            ),
            (
                "support response times",
                "the median first response dropped from 9 hours to 4 since the new rota",
            ),
        ],
        "person": ["Dana", "Marcus", "Yuki", "Fatima", "Tom", "Inés"],
        "debate": [
            "whether to delay the launch by another two weeks",
            "moving everyone to a shared on-call schedule",
            "how much of the budget to spend on paid ads",
            "whether to keep supporting the legacy API",
        ],
        "resolution": [
            "the group agreed to revisit it next week with more data",
            "the director will make the final call by Friday",
            "a small pilot will run first",
            "it was parked until after the board meeting",
        ],
        "act1": [
            "Dana to draft the revised timeline",
            "Marcus to shut down idle environments",
            "Yuki to update the onboarding checklist",
            "Fatima to schedule final interviews",
        ],
        "act2": [
            "Tom to share the survey results with leadership",
            "Inés to estimate the cost of the pilot",
            "the team to triage open bugs",
            "everyone to fill in the capacity spreadsheet",
        ],
        "act3": [
            "a follow-up with legal about data retention",
            "a decision on the vendor contract",
            "a short write-up for the company newsletter",
            "a retro on the last incident",
        ],
        "deadline": ["the next sync", "the end of the month", "Friday", "the board meeting"],
    },
)

ABSTRACT = Grammar(
    templates=(
        "In this study, we {study[0]} to examine {study[1]}. Using data from {study[2]}, we find"
        " that {finding}. The effect was {strength} among {study[3]}. {limitation} These results"
        " suggest that {implication}.",
    ),
    pools={
        "study": [
            (
                "analyse survey and output data",
                "whether remote work affects employee productivity",
                "three large employers",
                "workers with long commutes",
            ),
            (
                "link satellite maps of parks to health records",
                "how urban green space relates to mental health",
                "a national household panel",
                "low-income households",
            ),
            (
                "use a natural experiment created by a policy change",
                "the impact of free school meals on attendance",
                "1,400 primary schools",
                "children in rural areas",
            ),
            (
                "combine satellite imagery with field measurements",
                "how rising temperatures change crop yields",
                "312 farms across two growing seasons",
                "smaller farms",
            ),
            (
                "conduct a randomized controlled trial",
                "whether ten minutes of daily exercise improves sleep quality",
                "over 2,000 adults in four countries",
                "participants over 60",
            ),
            (
                "run a randomized trial",
                "whether text-message reminders reduce missed medical appointments",
                "48 outpatient clinics",
                "younger patients",
            ),
            (
                "analyse ten years of payroll records",
                "how minimum wage increases affect teenage employment",
                "every county in three states",
                "small restaurants",
            ),
        ],
        "finding": [
            "the intervention led to a modest but significant improvement",
            "there was no measurable effect on the main outcome",
            "outcomes improved in the first year but faded by the third",
            "the relationship is strongly nonlinear",
        ],
        "strength": ["strongest", "weakest", "largest", "barely detectable"],
        "limitation": [
            "Because participation was voluntary, selection bias cannot be ruled out.",
            "The follow-up period was relatively short.",
            "Self-reported measures may overstate the true effect.",
            "",
        ],
        "implication": [
            "targeted programmes may be more cost-effective than universal ones",
            "policymakers should plan for effects that change over time",
            "earlier estimates were likely too optimistic",
            "further studies in more diverse settings are needed",
        ],
    },
)

REVIEW = Grammar(
    templates=(
        "I've been using the {product[0]} for about {duration} now. {product[1]} {pro} On the"
        " downside, {con}. {support} Overall, {verdict}.",
    ),
    pools={
        "product": [
            ("XR-200 robot vacuum", "It picks up pet hair far better than I expected."),
            ("Breeze standing desk", "The motor is smooth and the height presets are handy."),
            ("Lumen e-reader", "The screen is sharp and easy on the eyes at night."),
            ("Tidal air fryer", "Fries come out crispy in about fifteen minutes."),
            (
                "Nomad 45L travel backpack",
                "It fits a week of clothes and still counts as carry-on.",
            ),
            ("Pulse fitness watch", "Battery life easily lasts a full week."),
            ("Echo Pro espresso machine", "The milk frother is the best I've used at home."),
        ],
        "duration": ["three weeks", "two months", "half a year", "a year"],
        "pro": [
            "Setup took less than ten minutes and the instructions were clear.",
            "Build quality is excellent for the price.",
            "It looks great and doesn't take up much space.",
            "My partner, who hates gadgets, actually uses it daily.",
        ],
        "con": [
            "it's heavier than it looks",
            "it costs noticeably more than similar options",
            "one part already shows wear",
            "replacement parts are overpriced and hard to find",
        ],
        "support": [
            "Customer support replaced a faulty part within a week.",
            "I never got a reply from customer support.",
            "",
        ],
        "verdict": [
            "I'd buy it again",
            "it's good value but not perfect",
            "I'd wait for the next version",
            "I'm returning it",
        ],
    },
)

COMPLAINT = Grammar(
    templates=(
        "Hi {agent}, I'm writing about order #{order}, which I placed {date}. {issue} I have"
        " already contacted support {times} and {experience}. {request} Best regards, {sender}",
    ),
    pools={
        "agent": ["there", "team", "Sam"],
        "order": nums(48210, 48990, 37),
        "date": ["on March 3", "on the 14th of May", "on June 21", "on September 9", "last Monday"],
        "issue": [
            "The package arrived with the box crushed and the lamp inside broken.",
            "I was charged twice, but only one item was delivered.",
            "The jacket I received is two sizes smaller than the one I ordered.",
            "Tracking has said 'in transit' for three weeks.",
        ],
        "times": ["twice", "three times", "by phone and by email"],
        "experience": [
            "each time I was told someone would call me back, which never happened",
            "the chatbot kept closing my case",
            "I was asked to send the same photos again",
        ],
        "request": [
            "I would like a full refund to my original payment method.",
            "Please send a replacement and a prepaid return label.",
            "I'd appreciate a clear answer on what happens next.",
        ],
        "sender": ["Laura Chen", "Ravi Patel", "Gwen Morris", "Diego Alvarez"],
    },
)

PASSAGE = Grammar(
    templates=("{news}", "{meeting}", "{abstract}", "{review}", "{complaint}"),
    pools={
        "news": NEWS,
        "meeting": MEETING,
        "abstract": ABSTRACT,
        "review": REVIEW,
        "complaint": COMPLAINT,
    },
)

SUMMARIZATION = Grammar(
    templates=(
        "Summarize the following in {n_sent} sentences:\n\n{passage}",
        "TL;DR please:\n\n{passage}",
        "Give me the key points of this {doc} as a bulleted list.\n\n{passage}",
        "Write a one-paragraph summary of the text below for {reader}.\n\n{passage}",
        "{passage}\n\nCan you summarize this in under {n_words} words?",
        "Condense this {doc} into a headline plus a two-sentence abstract:\n\n{passage}",
        "Summarize these notes. What was decided, and who owns which action item?\n\n{meeting}",
        "Summarize this customer email for a support ticket in one line, including what the"
        " customer wants:\n\n{complaint}",
        "Summarize this abstract in plain English for a general audience:\n\n{abstract}",
        "Here are two customer reviews. Summarize what they agree on and where they differ.\n\n"
        "Review 1: {review}\n\nReview 2: {other_review}",
        "{news}\n\nSummarize the article above in {n_sent} sentences and list the main"
        " arguments on each side.",
    ),
    pools={
        "n_sent": ["two", "three", "2-3", "one or two"],
        "doc": ["text", "passage", "excerpt", "paragraph"],
        "reader": [
            "a busy executive",
            "a newsletter audience",
            "a colleague who missed it",
            "someone with no background in the topic",
        ],
        "n_words": ["30", "40", "50", "25"],
        "passage": PASSAGE,
        "meeting": MEETING,
        "complaint": COMPLAINT,
        "abstract": ABSTRACT,
        "review": REVIEW,
        "other_review": REVIEW,
        "news": NEWS,
    },
)

# ---------------------------------------------------------------------------
# Translation
# ---------------------------------------------------------------------------

EMAIL_TO_TRANSLATE = Grammar(
    templates=(
        "Hi {name},\n\nThank you for {thanks}. {body} Please let me know {let_know}.\n\nBest,\n"
        "{sender}",
    ),
    pools={
        "name": ["Sophie", "Mr. Tanaka", "Carlos", "Ms. Rossi", "Lena"],
        "thanks": [
            "your quick reply",
            "meeting with us yesterday",
            "sending the updated contract",
            "your order",
        ],
        "body": [
            "We can deliver the first batch on the 12th.",
            "Unfortunately the hotel is fully booked on those dates.",
            "I've attached the invoice for last month.",
            "Our team will arrive at the airport around noon.",
        ],
        "let_know": [
            "if that works for you",
            "if you have any questions",
            "which option you prefer",
            "when you are available next week",
        ],
        "sender": ["Anna", "James", "Mei", "Oliver"],
    },
)

TRANSLATION = Grammar(
    templates=(
        "Translate to {lang}: {sentence}",
        'How do you say "{phrase}" in {lang}?',
        'Translate this {foreign[0]} sentence into English: "{foreign[1]}"',
        "Can you translate the following email into {lang}? Keep the tone {tone}.\n\n{email}",
        'What does the {idiom[0]} expression "{idiom[1]}" mean? I {where}.',
        "Translate this product description into {lang}, keeping the marketing tone:\n\n{desc}",
        'Please translate into both {langs[0]} and {langs[1]}: "{sentence}"',
        'I\'m learning {lang}. How would a native speaker say this? "{sentence}" And is there'
        " a more {register} way to say it?",
        "{foreign[1]}\n\ntranslate to english pls",
    ),
    pools={
        "lang": [
            "Spanish",
            "French",
            "German",
            "Italian",
            "Portuguese",
            "Japanese",
            "Korean",
            "Dutch",
            "Polish",
            "Mandarin Chinese",
        ],
        "langs": [
            ("French", "German"),
            ("Spanish", "Portuguese"),
            ("Japanese", "Korean"),
            ("Italian", "Greek"),
            ("Turkish", "Arabic"),
        ],
        "sentence": [
            "Where is the nearest pharmacy?",
            "Our flight has been delayed by two hours, so we'll arrive after dinner.",
            "Could you please send me the report by Friday?",
            "I'm allergic to peanuts; does this dish contain any nuts?",
            "The meeting has been moved to Thursday afternoon.",
            "Thank you so much for having us, we had a wonderful time.",
            "Please keep your ticket until the end of the journey.",
            "I'd like to open a bank account.",
            "Happy birthday! I hope all your wishes come true.",
            "The store closes early on public holidays.",
            "Can I pay by card, or is it cash only?",
            "We are looking for a developer with at least three years of experience.",
            "Do you have this jacket in a smaller size?",
            "My package was delivered to the wrong address.",
            "Turn left at the second traffic light and the hotel is on your right.",
            "Sorry I missed your call, I was driving.",
        ],
        "phrase": [
            "nice to meet you",
            "I'm just looking, thanks",
            "the bill, please",
            "excuse me, is this seat taken?",
            "I don't understand",
            "get well soon",
            "see you tomorrow",
            "how much does this cost?",
        ],
        "foreign": [
            ("Spanish", "¿Podrías decirme dónde está la estación de tren más cercana?"),
            ("Spanish", "Mañana tenemos una reunión a las nueve, no llegues tarde."),
            ("French", "Je voudrais réserver une table pour quatre personnes ce soir."),
            ("French", "Nous avons bien reçu votre paiement, merci de votre confiance."),
            ("German", "Könnten Sie mir bitte die Rechnung per E-Mail schicken?"),
            ("German", "Wegen Bauarbeiten fällt der Zug heute leider aus."),
            ("Italian", "La consegna è prevista entro tre giorni lavorativi."),
            ("Portuguese", "Você sabe a que horas o supermercado fecha hoje?"),
            ("Japanese", "駅までどうやって行けばいいですか？"),
            ("Dutch", "Ik heb mijn sleutels op kantoor laten liggen."),
        ],
        "tone": ["formal", "friendly", "polite but brief", "professional"],
        "email": EMAIL_TO_TRANSLATE,
        "idiom": [
            ("French", "avoir le cafard"),
            ("Spanish", "estar en las nubes"),
            ("German", "Tomaten auf den Augen haben"),
            ("Italian", "in bocca al lupo"),
            ("Japanese", "お疲れ様です"),
            ("Dutch", "nu komt de aap uit de mouw"),
            ("Spanish", "no hay mal que por bien no venga"),
            ("Portuguese", "pisar na bola"),
        ],
        "where": [
            "heard it in a TV show",
            "saw it in a text from a friend",
            "read it in a novel",
            "heard it at work",
        ],
        "desc": [
            "Stay cozy all winter with our ultra-soft merino blanket, woven by hand in small"
            " batches and built to last for decades.",
            "Meet the lightest running shoe we've ever made: responsive cushioning, a breathable"
            " upper, and grip you can trust on wet roads.",
            "Our cold-brew coffee is steeped for 18 hours for a smooth, naturally sweet taste."
            " No sugar, no shortcuts.",
            "This compact travel kettle folds flat, boils water in three minutes and fits in any"
            " carry-on.",
            "Keep your plants happy with our self-watering pots: fill the tank once and forget"
            " about it for two weeks.",
        ],
        "register": ["casual", "formal", "polite", "natural-sounding"],
    },
    distinct=frozenset({"sentence", "phrase", "foreign", "idiom", "desc"}),
)

# ---------------------------------------------------------------------------
# Creative writing
# ---------------------------------------------------------------------------

CREATIVE = Grammar(
    templates=(
        "Write a {form} about {subject}{constraint}.",
        "Write a short story ({words} words max) in which {premise}.",
        "Give me {n} ideas for a {genre} novel set in {setting}.",
        "Write a {form} in the style of {style} about {subject}.",
        'Continue this story for a few paragraphs: "{opening}"',
        "Write a scene of dialogue between {chars[0]} and {chars[1]} who {situation}.",
        "Write a {tone} {occasion} speech for my {who[0]}. {who[1]}",
        "Describe {place} at {time} in vivid sensory detail, as the opening paragraph of a"
        " {genre} novel.",
        "poem about {subject} pls",
    ),
    pools={
        "form": [
            "poem",
            "haiku",
            "limerick",
            "sonnet",
            "free-verse poem",
            "song chorus",
            "flash fiction piece",
        ],
        "subject": [
            "the first snowfall of the year",
            "a lighthouse keeper's last night on the job",
            "a cat who believes it rules the house",
            "missing a friend who moved abroad",
            "a robot learning to garden",
            "Monday mornings",
            "the smell of rain on hot pavement",
            "an old piano in an empty house",
            "a city at 3 a.m.",
            "a dragon who is afraid of heights",
            "my grandmother's kitchen",
            "the last day of summer vacation",
            "a houseplant that outlived three owners",
            "learning to ride a bike at forty",
            "the night shift at a 24-hour diner",
            "two strangers sharing an umbrella",
        ],
        "constraint": [
            "",
            " that rhymes",
            " for a child's birthday card",
            " with a twist at the end",
            " that I can read aloud at dinner",
            " that a 6-year-old would enjoy",
        ],
        "premise": [
            "a time traveler can only jump forward by exactly one minute",
            "the last bookstore on Earth receives a mysterious delivery",
            "two rival bakers get snowed in together",
            "a ghost tries to get a job",
            "a girl discovers her grandmother's recipes are secret maps",
            "the AI running a cargo ship starts writing poetry",
            "a town wakes up to find all its clocks running backwards",
        ],
        "words": ["200", "300", "500", "800"],
        "n": ["3", "5", "10"],
        "genre": [
            "mystery",
            "science fiction",
            "fantasy",
            "romance",
            "horror",
            "historical fiction",
        ],
        "setting": [
            "a floating city",
            "1920s Shanghai",
            "a research station in Antarctica",
            "a small fishing village",
            "a generation ship",
            "a boarding school in the Alps",
            "a drowned city in the year 2300",
            "Victorian London",
        ],
        "style": [
            "Edgar Allan Poe",
            "Dr. Seuss",
            "Emily Dickinson",
            "a hard-boiled detective novel",
            "Shakespeare",
            "a 1950s radio advertisement",
        ],
        "opening": [
            "The letter arrived forty years late.",
            "Nobody in the village had ever seen the door open before.",
            "On the morning of her thirtieth birthday, Ada woke up speaking fluent Latin.",
            "The storm knocked out the power just as the phone started ringing.",
            "I should never have answered the ad in the back of the newspaper.",
            "The robot had been waiting at the bus stop for eleven years.",
        ],
        "chars": [
            ("a pirate", "a tax accountant"),
            ("a retired superhero", "their therapist"),
            ("a barista", "a time traveler from 1850"),
            ("a medieval knight", "a smartphone voice assistant"),
            ("a grumpy wizard", "his overly cheerful apprentice"),
            ("a nervous intern", "a CEO who is secretly a vampire"),
        ],
        "situation": [
            "are stuck in an elevator",
            "have to share the last slice of pizza",
            "are planning a surprise party",
            "have just swapped bodies",
            "are lost in a supermarket",
        ],
        "tone": ["funny", "heartfelt", "short", "lighthearted"],
        "occasion": ["wedding", "retirement", "birthday", "graduation"],
        "who": [
            ("best friend", "We've known each other since kindergarten."),
            ("sister", "She loves hiking and terrible puns."),
            ("coworker of 20 years", "Keep it under two minutes."),
            ("dad", "He taught me to fish and still can't cook."),
            ("college roommate", "He once got us lost in Rome for a whole day."),
            ("grandmother", "She's turning 90 and still beats everyone at cards."),
            ("team lead", ""),
        ],
        "place": [
            "an abandoned train station",
            "a night market in Taipei",
            "a desert oasis",
            "a flooded library",
            "a mountain monastery",
            "a crowded ferry terminal",
            "an orbiting hotel",
        ],
        "time": ["dawn", "midnight", "dusk", "the height of a thunderstorm"],
    },
    distinct=frozenset({"subject", "premise", "setting", "opening", "chars", "place"}),
)

# ---------------------------------------------------------------------------
# Casual chit-chat and personal advice
# ---------------------------------------------------------------------------

CHAT = Grammar(
    templates=(
        "{hello} {smalltalk}",
        "I {worry[0]}. {worry[1]}",
        "Any tips for {activity}?",
        "What should I {decision}?",
        "My {friction[0]} {friction[1]}. How should I handle it without making things awkward?",
        "Can you recommend {rec} for someone who {likes}?",
        "I'm bored. {bored}",
        "Is it normal to {normal}?",
        "lol okay random question, what's your favorite {fav}?",
    ),
    pools={
        "hello": ["hey, how's it going?", "good morning!", "hi there :)", "Hello again!"],
        "smalltalk": [
            "What have you been up to?",
            "I just got back from a long weekend and I'm exhausted.",
            "Do you ever get tired of answering questions?",
            "It's raining here and I don't feel like doing anything.",
            "I finally finished that puzzle I was working on!",
            "Guess who just adopted a cat!",
            "Do you have a name, or should I make one up for you?",
            "Long day. Can we just chat for a bit?",
        ],
        "worry": [
            (
                "just moved to a new city and don't know anyone",
                "How do adults actually make friends?",
            ),
            (
                "have a job interview tomorrow and I'm really nervous",
                "Any advice for calming down the night before?",
            ),
            (
                "keep procrastinating on my thesis",
                "How do I get myself to actually start?",
            ),
            ("can't fall asleep before 2am no matter what I try", "What else could I do?"),
            (
                "got a puppy last week and she cries all night",
                "Is this normal, and what should I do?",
            ),
            ("want to start running but I hate it", "How do people learn to enjoy it?"),
            (
                "feel burnt out but can't afford to take time off",
                "How do I recharge on weekends?",
            ),
            ("forgot my best friend's birthday yesterday", "How do I make it up to her?"),
        ],
        "activity": [
            "a first date",
            "a long-haul flight with a toddler",
            "keeping houseplants alive",
            "learning guitar as an adult",
            "staying motivated while working from home",
            "hosting Thanksgiving for the first time",
            "cooking on a tight budget",
            "packing light for a two-week trip",
            "remembering people's names at networking events",
            "getting a toddler to eat vegetables",
        ],
        "decision": [
            "get my mom for her 60th birthday",
            "cook tonight with eggs, spinach and some leftover rice",
            "watch this weekend if I liked Severance",
            "name my new goldfish",
            "do on a rainy Sunday in Lisbon",
            "read next after finishing The Hobbit",
            "wear to a summer wedding that says 'garden formal'",
            "bring to a potluck if I can't really cook",
        ],
        "friction": [
            ("roommate", "never does the dishes and gets defensive when I bring it up"),
            ("best friend", "always cancels plans at the last minute"),
            ("teenage son", "barely talks to me anymore"),
            ("partner", "wants to move across the country for a job"),
            ("neighbor", "plays loud music every night until 1 in the morning"),
            ("sister", "keeps asking to borrow money"),
            ("in-laws", "drop by without calling first"),
        ],
        "rec": ["a podcast", "a board game", "a TV series", "a new hobby", "a weekend trip"],
        "likes": [
            "loves true crime",
            "gets bored easily",
            "enjoys cooking",
            "hates crowds",
            "is really into history",
        ],
        "bored": [
            "Give me something fun to do that doesn't cost money.",
            "Tell me a joke.",
            "Can we play twenty questions?",
            "Tell me a random fun fact.",
            "Ask me a would-you-rather question.",
            "Suggest a weird hobby I could pick up this week.",
        ],
        "normal": [
            "feel lonely even when I'm around people",
            "still not know what I want to do with my life at 28",
            "get anxious before parties I'm actually looking forward to",
            "miss my old job even though I hated it",
            "need a nap every afternoon",
            "feel sad after finishing a really good book",
        ],
        "fav": ["movie", "food", "season", "book", "color", "animal", "holiday", "word"],
    },
    distinct=frozenset(
        {
            "smalltalk",
            "worry",
            "activity",
            "decision",
            "friction",
            "rec",
            "likes",
            "bored",
            "normal",
            "fav",
        }
    ),
)

# ---------------------------------------------------------------------------
# Business emails and marketing copy
# ---------------------------------------------------------------------------

BUSINESS = Grammar(
    templates=(
        "Write a {tone} email to {mail[0]} {mail[1]}.",
        "Draft a LinkedIn post announcing {announcement}.",
        "Write three {style} taglines for {product}.",
        'Rewrite this email so it sounds more {quality}:\n\n"{draft}"',
        "Create a product description for {product} that highlights {feature}. Keep it under"
        " {words} words.",
        "Write a follow-up email to a prospect who hasn't replied to my {thing} from {when}.",
        "Outline a {channel} marketing campaign for {product} with a budget of {budget}.",
        "Write a short agenda for {meeting}.",
        "Write a job posting for a {role} at {company}. Mention {perk}.",
        "Write a short FAQ section for the website of {product}.",
        "Write a polite reply to a customer who {customer}.",
    ),
    pools={
        "tone": ["polite", "friendly but firm", "formal", "concise", "warm"],
        "mail": [
            ("a client", "asking to move our Thursday meeting to next week"),
            ("my manager", "explaining that the project will be two weeks late"),
            ("a potential partner", "declining their partnership offer"),
            ("my professor", "requesting a one-week extension on my report"),
            ("the whole team", "announcing a new expense policy"),
            ("a customer", "following up on an invoice that is 30 days overdue"),
            ("a job candidate", "letting them know we went with someone else"),
            ("our investors", "summarising the quarter's results"),
            ("a supplier", "asking for a discount on a bulk order"),
        ],
        "announcement": [
            "that I've started a new role as Head of Data at a fintech startup",
            "our company's Series A funding round",
            "the launch of our new mobile app",
            "that our team won an industry award",
            "that we're hiring three backend engineers",
            "my certification as a project management professional",
            "that I'm leaving my job after eight years",
            "our new office in Lisbon",
        ],
        "product": [
            "a reusable water bottle that tracks how much you drink",
            "a meal-kit service for busy parents",
            "a project management app for small agencies",
            "an eco-friendly laundry detergent",
            "a language-learning app built on short podcasts",
            "a co-working space in downtown Austin",
            "noise-cancelling earbuds for runners",
            "a budgeting tool for freelancers",
            "a subscription box of snacks from around the world",
            "a smart bike lock that unlocks with your phone",
            "an online pottery course for beginners",
            "a dog-walking app for busy neighborhoods",
            "a zero-waste refill shop opening next month",
            "a payroll tool for restaurants",
        ],
        "style": ["punchy", "playful", "premium-sounding", "short", "witty"],
        "quality": ["professional", "polite", "friendly", "diplomatic", "confident"],
        "draft": [
            "hey, we still haven't gotten paid for the work from march. pls send asap or we'll"
            " have to stop work.",
            "I can't do the meeting. Reschedule.",
            "As per my last email, the files were attached. Please review them this time.",
            "Your product is broken and nobody answers my tickets. I want a refund now.",
            "we need the numbers by tomorrow, no excuses",
            "Thanks for the feedback but we're not changing the design. It's final.",
            "FYI the server was down all weekend, it's fixed now i think",
        ],
        "feature": ["how much time it saves", "sustainability", "ease of use", "the low price"],
        "words": ["50", "80", "100", "150"],
        "thing": ["proposal", "quote", "demo invitation", "partnership pitch"],
        "when": ["last week", "two weeks ago", "early this month", "last Tuesday"],
        "channel": ["Instagram", "email", "TikTok", "Google Ads", "LinkedIn"],
        "budget": ["$5,000", "$20,000", "€2,000 a month", "$500"],
        "meeting": [
            "a quarterly business review with a key client",
            "kicking off a website redesign project",
            "a weekly sales team check-in",
            "a post-mortem on last week's outage",
            "next year's budget planning session",
            "onboarding a new enterprise customer",
            "a brainstorming session on reducing churn",
        ],
        "role": [
            "senior backend engineer",
            "part-time bookkeeper",
            "customer success manager",
            "graphic designer",
            "warehouse shift lead",
            "junior data analyst",
        ],
        "company": [
            "a 30-person SaaS startup",
            "a family-owned bakery",
            "a nonprofit focused on literacy",
            "a regional accounting firm",
        ],
        "perk": ["remote work options", "a four-day week", "equity", "flexible hours"],
        "customer": [
            "is angry that their delivery is a week late",
            "asks for a discount we can't give",
            "left a one-star review about our support",
            "wants to cancel their subscription",
            "reported a bug we already fixed",
            "is asking when the product will be back in stock",
        ],
    },
    distinct=frozenset({"mail", "announcement", "product", "draft", "meeting", "customer", "role"}),
)

# ---------------------------------------------------------------------------
# Legal, medical and financial questions
# ---------------------------------------------------------------------------

PROFESSIONAL = Grammar(
    templates=(
        "In {place}, can my landlord {landlord}?",
        "What are the legal requirements for {legal_task} in {place}?",
        "For {duration} I've had {symptom}. {med_context}Should I see a doctor, and what could"
        " be causing it?",
        "Is it safe to take {drugs[0]} together with {drugs[1]}?",
        "What is the usual treatment for {condition}, and how long does recovery typically take?",
        "I'm {age} and have {savings} in savings. Should I {fin_choice}?",
        "Explain {fin[0]} and its effect on {fin[1]}.",
        "How is {income} taxed in {country}?",
        "Legal question: {legal_q}",
    ),
    pools={
        "landlord": [
            "keep my whole security deposit for normal wear and tear",
            "raise the rent in the middle of a fixed-term lease",
            "enter my apartment without giving notice",
            "evict me for having a cat if the lease doesn't mention pets",
            "refuse to fix a broken heater in winter",
            "charge me for repainting when I move out",
        ],
        "place": ["California", "Ontario", "England", "New York", "Germany", "Texas"],
        "legal_task": [
            "forming an LLC",
            "firing an employee for poor performance",
            "writing a valid will",
            "using a photo I found online on my company blog",
            "recording a phone call",
            "subletting my apartment",
            "running a giveaway on Instagram",
            "hiring a nanny",
        ],
        "symptom": [
            "a dull headache every afternoon",
            "a persistent dry cough",
            "lower back pain that gets worse when I sit",
            "tingling in my fingers",
            "heartburn after almost every meal",
            "an itchy rash on my forearm",
            "ringing in my left ear",
            "a swollen knee after running",
        ],
        "duration": ["the past three days", "two weeks", "about a month", "most of the past year"],
        "med_context": [
            "I'm 34 and otherwise healthy. ",
            "I recently started a new blood pressure medication. ",
            "I work at a desk all day. ",
            "",
        ],
        "drugs": [
            ("ibuprofen", "lisinopril"),
            ("melatonin", "sertraline"),
            ("paracetamol", "a couple of glasses of wine"),
            ("St John's wort", "birth control pills"),
            ("antacids", "ciprofloxacin"),
            ("aspirin", "warfarin"),
            ("an antihistamine", "my sleeping pills"),
            ("magnesium supplements", "levothyroxine"),
        ],
        "condition": [
            "a sprained ankle",
            "plantar fasciitis",
            "iron-deficiency anemia",
            "a mild concussion",
            "shingles",
            "a torn meniscus",
            "tennis elbow",
            "an underactive thyroid",
        ],
        "age": ["25", "32", "41", "58"],
        "savings": ["$10,000", "$45,000", "$120,000", "$3,000"],
        "fin_choice": [
            "pay off my student loans faster or invest in an index fund",
            "open a Roth IRA or put more into my 401(k)",
            "buy a house now or keep renting for a few more years",
            "keep my emergency fund in a high-yield savings account or in bonds",
            "start investing in individual stocks or stick to ETFs",
            "take a lump-sum pension payout or monthly payments",
        ],
        "fin": [
            ("compound interest", "long-term retirement savings"),
            ("capital gains tax", "selling shares I've held for two years"),
            ("inflation", "the real return on my savings account"),
            ("an adjustable-rate mortgage", "my monthly payments if rates rise"),
            ("dollar-cost averaging", "the risk of investing a lump sum"),
            ("an expense ratio", "index fund returns over 30 years"),
            ("a credit score", "the interest rate I get on a car loan"),
        ],
        "income": [
            "freelance income",
            "rental income from a second apartment",
            "exercising stock options from my employer",
            "profit from selling cryptocurrency",
            "a small inheritance",
            "income from selling handmade goods online",
        ],
        "country": ["the US", "the UK", "Canada", "Australia", "Germany"],
        "legal_q": [
            "If I signed an NDA with my previous employer, can I still work for a competitor?",
            "What's the difference between a will and a living trust?",
            "Do I need a lawyer to file a small claims case?",
            "Can a shop refuse a refund if the product arrived damaged?",
            "What happens to my estate if I die without a will and have two children?",
            "Is a verbal agreement legally binding?",
            "Can my employer read messages I send on my work laptop?",
            "Who is liable if a guest slips on ice outside my house?",
        ],
    },
    distinct=frozenset(
        {
            "landlord",
            "legal_task",
            "symptom",
            "drugs",
            "condition",
            "fin_choice",
            "fin",
            "income",
            "legal_q",
        }
    ),
)

# Family name -> grammar. The order fixes the output, so append new families.
FAMILIES: dict[str, Grammar] = {
    "python_coding": PYTHON,
    "sql_data": SQL,
    "web_debugging": WEB,
    "math_word_problem": MATH_WORD,
    "advanced_math": ADVANCED_MATH,
    "science_qa": SCIENCE,
    "summarization": SUMMARIZATION,
    "translation": TRANSLATION,
    "creative_writing": CREATIVE,
    "casual_chat": CHAT,
    "business_writing": BUSINESS,
    "professional_advice": PROFESSIONAL,
}


# ---------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------


def _tokens(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _casual(prompt: str, rng: random.Random) -> str:
    """Sometimes lower-case the first letter, as people often type."""
    if rng.random() < LOWERCASE_RATE and prompt[:2].istitle() and prompt[:2].isalpha():
        return prompt[0].lower() + prompt[1:]
    return prompt


def generate_family(
    family: str, grammar: Grammar, count: int, taken: set[str], rng: random.Random
) -> list[str]:
    """Draw ``count`` distinct prompts, cycling through the family's templates.

    A draw is rejected if it repeats a prompt of any family (``taken``), reuses a
    value of a ``distinct`` slot, falls outside the word limits, or is a
    near-duplicate of a prompt already accepted for this family. A template that
    keeps failing is retired.
    """
    order = list(range(len(grammar.templates)))
    rng.shuffle(order)
    retired: set[int] = set()
    used: set[tuple[str, Value]] = set()
    prompts: list[str] = []
    token_sets: list[frozenset[str]] = []
    while len(prompts) < count:
        live = [i for i in order if i not in retired]
        if not live:
            sys.exit(f"{family}: only {len(prompts)} of {count} prompts; add templates or values")
        for index in live:
            if len(prompts) == count:
                break
            for _ in range(ATTEMPTS_PER_TEMPLATE):
                text, values = draw(grammar.templates[index], grammar.pools, rng)
                prompt = _casual(text, rng)
                keys = {(n, v) for n, v in values.items() if n in grammar.distinct}
                tokens = _tokens(prompt)
                if (
                    prompt not in taken
                    and not keys & used
                    and MIN_WORDS <= len(prompt.split()) <= MAX_WORDS
                    and all(_jaccard(tokens, other) <= MAX_JACCARD for other in token_sets)
                ):
                    taken.add(prompt)
                    used |= keys
                    prompts.append(prompt)
                    token_sets.append(tokens)
                    break
            else:
                retired.add(index)
    return prompts


def check(grammar: Grammar, where: str) -> None:
    """Fail loudly on a slot without values or values no template uses."""
    used = {name for template in grammar.templates for name in slot_names(template)}
    missing = sorted(used - grammar.pools.keys())
    unused = sorted(grammar.pools.keys() - used)
    stray = sorted(grammar.distinct - used)
    if missing or unused or stray:
        sys.exit(f"{where}: missing pools {missing}, unused pools {unused}, stray {stray}")
    for name, pool in grammar.pools.items():
        if isinstance(pool, Grammar):
            check(pool, f"{where}.{name}")


def build() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    for family, grammar in FAMILIES.items():
        check(grammar, family)
    taken: set[str] = set()
    train: list[dict[str, str]] = []
    val: list[dict[str, str]] = []
    for family, grammar in FAMILIES.items():
        rng = random.Random(f"{SEED}:{family}")
        prompts = generate_family(family, grammar, TRAIN_PER_FAMILY + VAL_PER_FAMILY, taken, rng)
        rng.shuffle(prompts)
        val += [{"prompt": p, "family": family} for p in prompts[:VAL_PER_FAMILY]]
        train += [{"prompt": p, "family": family} for p in prompts[VAL_PER_FAMILY:]]
    mixer = random.Random(f"{SEED}:mix")
    mixer.shuffle(train)
    mixer.shuffle(val)
    for number, row in enumerate(val, start=1):
        row["id"] = f"val-{number:04d}"
    return train, val


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Generate the synthetic prompt set behind the starter clustering."
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=OUT_DIR,
        help="directory for train.jsonl and val.jsonl (default: %(default)s)",
    )
    out: Path = parser.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)
    train, val = build()
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "val.jsonl", val)
    print(f"wrote {len(train)} train and {len(val)} val prompts to {out}")


if __name__ == "__main__":
    main()
