#!/usr/bin/python3
"""Baseline of ztee-bench-dlp: the default DLP detectors as Python `re`
patterns plus the same validators (Luhn and issuer ranges, IBAN length and
mod-97, SSN ranges, e-mail, phone, JWT header), run over a file.

Usage: bench_dlp_baseline.py FILE
Prints one JSON line: {"seconds": <scan time>, "cpu_seconds": <the scanning
thread's CPU time>, "bytes": N, "findings": {detector: count}}. Only the scan is
timed (reading the file and compiling the patterns are not).
"""
import base64
import json
import math
import re
import sys
import time

CARD = (rb"(?:^|[^0-9A-Za-z_ \-]|(?:^|[^0-9])[ \-])([2-6](?:[0-9]{12,18}|[0-9]{3}(?: [0-9]{4}){2}(?: [0-9]{1,4}){1,2}"
        rb"|[0-9]{3}(?:-[0-9]{4}){2}(?:-[0-9]{1,4}){1,2}|[0-9]{3} [0-9]{6} [0-9]{4,5}|[0-9]{3}-[0-9]{6}-[0-9]{4,5}))"
        rb"(?=[^0-9A-Za-z_ \-]|[ \-](?:[^0-9]|$)|$)")
PATTERNS = [
    ("card", CARD),
    ("iban", rb"(?:^|[^A-Za-z0-9])([A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?))(?=[^A-Za-z0-9]|$)"),
    ("ssn", rb"(?:^|[^0-9A-Za-z_\-])([0-9]{3}-[0-9]{2}-[0-9]{4})(?=[^0-9A-Za-z_\-]|$)"),
    ("email", rb"(?:^|[^A-Za-z0-9._%+\-])([A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,40}){0,3}\.[A-Za-z]{2,24})"
              rb"(?=[^A-Za-z0-9.\-]|\.(?:[^A-Za-z0-9\-]|$)|$)"),
    ("phone", rb"(?:^|[^A-Za-z0-9_+])(\+[1-9][0-9]{7,14})(?=[^0-9A-Za-z_]|$)"),
    ("phone", rb"(?:^|[^A-Za-z0-9_+])(\+[1-9][0-9]{0,2}(?:[ .\-](?:\([0-9]{1,4}\)|[0-9]{1,4})){2,6})(?=[^0-9A-Za-z_]|$)"),
    ("phone", rb"(?:^|[^A-Za-z0-9_+\-.])((?:1[ .\-]?)?(?:\([0-9]{3}\) ?|[0-9]{3}[.\-])[0-9]{3}[.\-][0-9]{4})(?=[^0-9A-Za-z_\-.]|\.(?:[^0-9]|$)|$)"),
    ("private_key", rb"(-----BEGIN (?:[A-Z0-9]{1,20} ){0,2}PRIVATE KEY-----(?:[\r\n]{1,2}Proc-Type: [A-Z0-9,]{1,32}[\r\n]{1,2}DEK-Info: [A-Za-z0-9,\-]{1,128})?"
                    rb"[A-Za-z0-9+/=\r\n\t ]{1,8192}-----END (?:[A-Z0-9]{1,20} ){0,2}PRIVATE KEY-----)"),
    ("aws_access_key", rb"(?:^|[^A-Za-z0-9])((?:AKIA|ASIA)[A-Z2-7]{16})(?=[^A-Za-z0-9]|$)"),
    ("aws_secret_key", rb"(?i:aws)[A-Za-z0-9_ .\-]{0,32}(?i:secret|key)[A-Za-z0-9_ .\-]{0,32}[\"']?[ \t]{0,4}(?::=|=>|:|=)[ \t]{0,4}[\"']?([A-Za-z0-9/+]{40})(?=[^A-Za-z0-9/+=]|$)"),
    ("github_token", rb"(?:^|[^A-Za-z0-9_])(gh[pousr]_[A-Za-z0-9]{36,80}|github_pat_[A-Za-z0-9_]{22,160})(?=[^A-Za-z0-9_]|$)"),
    ("gitlab_token", rb"(?:^|[^A-Za-z0-9_\-])(glpat-[A-Za-z0-9_\-]{20,64})(?=[^A-Za-z0-9_\-]|$)"),
    ("slack_token", rb"(?:^|[^A-Za-z0-9_\-])(xox[abprs]-[A-Za-z0-9\-]{10,160})(?=[^A-Za-z0-9_\-]|$)"),
    ("stripe_key", rb"(?:^|[^A-Za-z0-9_])((?:sk|rk|pk)_live_[A-Za-z0-9]{16,128})(?=[^A-Za-z0-9_]|$)"),
    ("jwt", rb"(?:^|[^A-Za-z0-9_.\-])(eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]{1,})(?=[^A-Za-z0-9_.\-]|\.(?:[^A-Za-z0-9_\-]|$)|$)"),
]

IBAN_LEN = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
NOT_TLD = {"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "js", "mjs", "ts", "css", "map", "json", "html",
           "htm", "xml", "txt", "md", "py", "rb", "go", "rs", "java", "class", "jar", "so", "dll", "exe", "bin",
           "lock", "log", "yaml", "yml", "toml", "ini", "cfg", "tar", "gz", "zip", "whl", "egg", "pdf", "woff",
           "woff2", "ttf", "otf", "mp3", "mp4", "wav", "lua", "sh"}


def digits(s):
    return bytes(c for c in s if 48 <= c <= 57).decode()


def luhn(d):
    total = 0
    for i, ch in enumerate(reversed(d)):
        v = ord(ch) - 48
        if i % 2:
            v = v * 2 - 9 if v > 4 else v * 2
        total += v
    return total % 10 == 0


def card_issuer(d):
    n = len(d)
    if not 13 <= n <= 19:
        return False
    p2, p3, p4, p6 = int(d[:2]), int(d[:3]), int(d[:4]), int(d[:6])
    if d[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925:
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19
    if 300 <= p3 <= 305 or p4 == 3095 or p2 in (36, 38, 39):
        return 14 <= n <= 19
    if p2 == 62:
        return 16 <= n <= 19
    if p4 in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763):
        return 13 <= n <= 19
    return False


def v_card(s):
    d = digits(s)
    return card_issuer(d) and luhn(d)


def v_iban(s):
    c = s.replace(b" ", b"").decode()
    if IBAN_LEN.get(c[:2]) != len(c):
        return False
    r = c[4:] + c[:4]
    return int("".join(str(int(ch, 36)) for ch in r)) % 97 == 1


def v_ssn(s):
    d = digits(s)
    a, g, n = int(d[:3]), int(d[3:5]), int(d[5:])
    return a not in (0, 666) and a < 900 and g != 0 and n != 0


def v_email(s):
    local, _, domain = s.partition(b"@")
    if local.startswith(b".") or local.endswith(b".") or b".." in local:
        return False
    for label in domain.split(b"."):
        if not label or label.startswith(b"-") or label.endswith(b"-"):
            return False
    return domain.rsplit(b".", 1)[1].lower().decode() not in NOT_TLD


def v_phone(s):
    if s.startswith(b"(") and not (len(s) > 4 and s[4:5] == b")"):
        s = s[1:]
    d = digits(s)
    if s.startswith(b"+"):
        if not 8 <= len(d) <= 15 or d[0] == "0":
            return False
        if d[0] == "1" and len(s) > len(d) + 1:
            return len(d) == 11 and d[1] >= "2" and d[4] >= "2"
        return True
    if len(d) == 11 and d[0] == "1":
        d = d[1:]
    return len(d) == 10 and d[0] >= "2" and d[3] >= "2"


def v_aws_secret(s):
    return any(c.isupper() for c in s.decode()) and any(c.islower() for c in s.decode()) and any(c.isdigit() for c in s.decode())


def v_jwt(s):
    parts = s.split(b".")
    if len(parts) != 3:
        return False
    try:
        h = json.loads(base64.urlsafe_b64decode(parts[0] + b"=" * (-len(parts[0]) % 4)))
    except Exception:
        return False
    return isinstance(h, dict) and isinstance(h.get("alg"), str)


VALIDATORS = {"card": v_card, "iban": v_iban, "ssn": v_ssn, "email": v_email, "phone": v_phone,
              "aws_secret_key": v_aws_secret, "jwt": v_jwt}


def main():
    data = open(sys.argv[1], "rb").read()
    compiled = [(name, re.compile(p)) for name, p in PATTERNS]
    counts = {}
    t0 = time.perf_counter()
    c0 = time.thread_time()
    for name, rx in compiled:
        check = VALIDATORS.get(name)
        n = 0
        for m in rx.finditer(data):
            v = m.group(1)
            if check is None or check(v):
                n += 1
        counts[name] = counts.get(name, 0) + n
    seconds = time.perf_counter() - t0
    cpu_seconds = time.thread_time() - c0
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "bytes": len(data), "findings": counts}))


if __name__ == "__main__":
    main()
