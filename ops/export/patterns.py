"""PHI patterns for report text in English and Chinese: dates, phones, emails, ids, addresses, titled names.

Stage: export (de-identification, the pattern half; ``ops.export.deid`` adds each report's own values). Input: text.
Output: the text with each match replaced by a placeholder (``[DATE]``, ``[PHONE]``, ``[EMAIL]``, ``[ID]``,
``[ADDRESS]``, ``[NAME]``) and the count per placeholder. Failure modes: none.
Design and KNOWN GAPS (review exports before they leave the hospital): ops/README.md.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from schemas.language import IDEOGRAPH_CLASS

_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|Jun(?:e)?|Jul(?:y)?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
_HAN = IDEOGRAPH_CLASS  # a regex class body: [{_HAN}]{2,4} is two to four Han characters
# Common Chinese surnames (the first ~120 of the 百家姓 by frequency, and the compound ones).
_SURNAME = ("欧阳|司马|诸葛|上官|司徒|东方|王|李|张|刘|陈|杨|黄|赵|吴|周|徐|孙|马|朱|胡|郭|何|高|林|罗|郑|梁|谢|宋|唐|"
            "许|韩|冯|邓|曹|彭|曾|肖|田|董|袁|潘|于|蒋|蔡|余|杜|叶|程|苏|魏|吕|丁|任|沈|姚|卢|姜|崔|钟|谭|陆|汪|范|金|"
            "石|廖|贾|夏|韦|付|傅|方|白|邹|孟|熊|秦|邱|江|尹|薛|闫|段|雷|侯|龙|史|陶|黎|贺|顾|毛|郝|龚|邵|万|钱|严|"
            "覃|武|戴|莫|孔|向|汤|常|温|康|施|文|牛|樊|葛|邢|安|齐|易|乔|伍|庞|颜|倪|庄|聂|章|鲁|岳|翟|殷|詹|申|耿|关|兰|焦|俞|左|柳|甘|祝|包|宁|尚|符|舒|阮|柯|纪|梅|童|凌|毕|单|季|裴|霍|涂|成|苗|谷|盛|曲|翁|冉|骆|蓝|路|游|辛|靳|管|柴|蒙|鲍|华|喻|祁|蒲|房|滕|屈|饶|解|牟|艾|尤|阳|时|穆|农|司|卓|古|吉|缪|简|车|项|连|芦|麦|褚|娄|窦|戚|岑|景|党|宫|费|卜|冷|晏|席|卫|米|柏|宗|瞿|桂|全|佟|应|臧|闵|苟|邬|边|卞|姬|师|和|仇|栾|隋|商|刁|沙|荣|巫|寇|桑|郎|甄|丛|仲|虞|敖|巩|明|佘|池|查|麻|苑|迟|邝")


def _keep_label(match: re.Match[str], placeholder: str) -> str:
    return f"{match.group('label')}{placeholder}"


# (placeholder, pattern, keep the ``label`` group?) in the order they run: labelled fields first,
# so "MRN: 12345" keeps its label; emails before ids; dates before phones (20240305 is a date).
_RULES: tuple[tuple[str, re.Pattern[str], bool], ...] = (
    ("[EMAIL]", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), False),
    ("[ID]", re.compile(
        r"(?P<label>\b(?:MRN|MR\s?#|Medical\s+Record(?:\s+(?:No\.?|Number))?|Patient\s+ID|Acc(?:ession)?(?:\s+(?:No\.?|Number))?|"
        r"ACC\s?#|SSN|Social\s+Security(?:\s+Number)?)\s*[:#：]?\s*|(?:病历号|住院号|门诊号|就诊号|患者ID|登记号|检查号|影像号|"
        r"身份证号?|医保号)\s*[:：]?\s*)[A-Za-z0-9][A-Za-z0-9-]*\d[A-Za-z0-9-]*", re.IGNORECASE), True),
    ("[NAME]", re.compile(
        rf"(?P<label>\b(?:Patient\s+Name|Name)\s*[:：]\s*|(?:姓名|患者姓名|病人姓名)\s*[:：]?\s*)"
        rf"(?:[A-Z][A-Za-z'-]+(?:,?\s+[A-Z][A-Za-z'-]+){{0,2}}|[{_HAN}]{{2,4}})"), True),
    ("[NAME]", re.compile(
        r"(?P<label>\b(?:Dr|Mr|Mrs|Ms|Miss|Prof|Doctor)\.?\s+)[A-Z][A-Za-z'-]+(?:\s+[A-Z][A-Za-z'-]+)?"), True),
    ("[NAME]", re.compile(rf"(?:{_SURNAME})[{_HAN}]{{0,2}}(?=先生|女士|小姐|医生|医师|大夫|主任|教授|护士|同志)"), False),
    ("[ADDRESS]", re.compile(
        r"\b\d{1,5}\s+(?:[A-Z][A-Za-z]+\s+){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|"
        r"Court|Ct|Way|Place|Pl|Terrace|Parkway|Pkwy|Highway|Hwy)\b\.?(?:,?\s+(?:Apt|Suite|Unit)\.?\s*\w+)?"), False),
    ("[ADDRESS]", re.compile(
        rf"(?:[{_HAN}]{{2,7}}(?:省|自治区))?(?:[{_HAN}]{{2,7}}市)?(?:[{_HAN}]{{1,6}}[区县])?[{_HAN}\d]{{1,10}}"
        rf"(?:路|街|道|巷|大道|里)\d+(?:弄\d+)?号(?:[\d-]+(?:室|楼|栋|单元))*"), False),
    ("[ADDRESS]", re.compile(rf"[{_HAN}]{{2,7}}(?:省|自治区)[{_HAN}]{{2,7}}市(?:[{_HAN}]{{1,6}}[区县])?"), False),
    ("[DATE]", re.compile(r"\b\d{4}([-/.])\d{1,2}\1\d{1,2}(?:[T\s]\d{1,2}:\d{2}(?::\d{2})?)?\b"), False),
    ("[DATE]", re.compile(r"\b\d{1,2}([-/.])\d{1,2}\1\d{2,4}\b"), False),
    ("[DATE]", re.compile(r"(?<!\d)(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?:\d{2}){0,3}(?:[+-]\d{4})?(?!\d)"), False),
    ("[DATE]", re.compile(r"(?:\d{2,4}\s*年\s*)?\d{1,2}\s*月(?:\s*\d{1,2}\s*[日号])?|\d{4}\s*年"), False),
    ("[DATE]", re.compile(rf"\b(?:{_DAY}\s+{_MONTH}\.?,?\s+\d{{4}}|{_MONTH}\.?\s+{_DAY},?\s+\d{{4}}|{_MONTH}\.?\s+\d{{4}})\b",
                          re.IGNORECASE), False),
    ("[PHONE]", re.compile(r"(?<![\w+])(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?|\d{3,4}[\s.-])\d{3,4}[\s.-]?\d{4}(?!\d)"), False),
    ("[PHONE]", re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)"), False),
    ("[ID]", re.compile(r"(?<![A-Za-z0-9.,])(?:[A-Za-z]{1,5}-?)?\d{5,}(?:-\d+)?(?![A-Za-z0-9])"), False),
    ("[ID]", re.compile(r"(?<![A-Za-z0-9])[A-Z]{2,6}-?\d{4,}(?![A-Za-z0-9])"), False),
)


def _replacer(placeholder: str, keep_label: bool, counts: Counter[str]) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        counts[placeholder] += 1
        return _keep_label(match, placeholder) if keep_label else placeholder

    return replace


def scrub_patterns(text: str, counts: Counter[str] | None = None) -> str:
    """``text`` with every pattern match replaced by its placeholder; ``counts`` gains one per match."""
    tally: Counter[str] = counts if counts is not None else Counter()
    for rule in _RULES:
        placeholder, pattern, keep_label = rule
        text = pattern.sub(_replacer(placeholder, keep_label, tally), text)
    return text
