"""The applicant's consent page: server-rendered HTML (no JavaScript), Chinese by default, English on request.

Each source the lender asks for is shown with what it holds, what the model uses it for (the feature catalogue's
reason groups of the features that read it), who uses it and how long it is kept, with a grant/decline choice
of its own; once answered, the same page shows the current grants and a withdrawal button per granted source.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, select_autoescape

from service.scoring.catalog import CATALOG, GROUPS
from service.web.page import LANGS, SOURCE_LABELS

_env = Environment(loader=PackageLoader("service.web", "templates"), autoescape=select_autoescape(["html", "j2"]),
                   trim_blocks=True, lstrip_blocks=True)

WHAT = {  # what each source holds, in the applicant's terms (the data contract's monthly files)
    "tax": ("按月的增值税申报、缴税、开票张数与金额、是否按时申报及欠税情况",
            "Monthly VAT returns: declared sales, tax paid, invoices issued and their amount, on-time filing, arrears"),
    "payments": ("经营账户与收款码的月度收支汇总：流入、流出、笔数、交易对手数、退款",
                 "Monthly totals of your business account and POS: money in and out, transactions, counterparties, "
                 "refunds"),
    "utilities": ("按月的用电量、电费，以及缴费是否逾期、是否欠费",
                  "Monthly electricity use and bills, late payment days and arrears"),
    "social_insurance": ("按月的参保人数、社保缴费金额及是否断缴",
                         "Monthly insured headcount, contributions paid and missed payments"),
    "bureau": ("征信报告中的在贷笔数、近6个月查询次数和最长逾期天数",
               "From your credit report: open loans, inquiries in the last 6 months, worst days past due"),
    "links": ("企业的股东和法定代表人、注册地址、联系电话、收款账户（均以化名代码保存）、企业间担保，"
              "以及发票中的主要客户和供应商；与贷款机构已知的其他企业比对",
              "Your owners and legal representative, registered address, contact phone, receiving accounts (all kept "
              "as pseudonymous codes), guarantees between firms, and main customers and suppliers from your "
              "invoices; matched against the other firms the lender knows"),
}
STATUS = {"pending": ("待选择", "Not answered"), "granted": ("已同意", "Granted"), "declined": ("已拒绝", "Declined"),
          "withdrawn": ("已撤回", "Withdrawn")}


def used_for(source: str) -> list[str]:
    """The catalogue's reason groups of every feature that reads ``source``, in the catalogue's order (as keys)."""
    groups: list[str] = []
    for feature in CATALOG:
        if source in feature.sources and feature.group not in groups:
            groups.append(feature.group)
    return groups


@dataclass(frozen=True)
class SourceRow:
    source: str
    status: str  # pending | granted | declined | withdrawn
    recorded_at: dt.datetime | None


@dataclass(frozen=True)
class ConsentPage:
    """What the page shows, already read from the database."""

    token: str
    lender: str
    purpose: str
    rows: tuple[SourceRow, ...]
    answerable: bool  # not answered and before the deadline
    usable: bool  # answered and before the deadline: the lender may still score with the grants
    expires_at: dt.datetime
    link_expires_at: dt.datetime
    retention_days: int


def _when(at: dt.datetime | None) -> str:
    return "" if at is None else at.strftime("%Y-%m-%d %H:%M UTC")


def render_consent(page: ConsentPage, *, lang: str, error: tuple[str, str] | None = None,
                   done: str | None = None) -> str:
    k = LANGS.index(lang)
    sources = [{"key": r.source, "label": SOURCE_LABELS[r.source][k], "what": WHAT[r.source][k],
                "used_for": [GROUPS[g].label_zh if k == 0 else GROUPS[g].label_en for g in used_for(r.source)],
                "status": r.status, "status_label": STATUS[r.status][k], "when": _when(r.recorded_at)}
               for r in page.rows]
    return _env.get_template("consent.html.j2").render(
        lang=lang, k=k, p=page, sources=sources, error=error[k] if error else None, done=done,
        expires=_when(page.expires_at), link_expires=_when(page.link_expires_at))


EXPIRED = (("链接已过期", "This link has expired"),
           ("为保护您的信息，授权页面的链接有有效期。如需授权，请联系贷款机构重新发送授权请求。",
            "To protect your information, consent links expire. Ask the lender to send a new request if needed."))

# Why a form was refused, per language: {field} is the form field, {label} the source's name.
PROBLEMS = {
    "choose": ("请为“{label}”选择“同意”或“不同意”（表单字段 {field}：必须为 grant 或 decline，且只选一项）。",
               "Choose grant or decline for “{label}” (form field {field}: must be grant or decline, exactly once)."),
    "not_asked": ("表单字段 {field}：不是本次请求的数据来源。",
                  "Form field {field}: not a source this request asks for."),
    "already_answered": ("您已提交过选择，不能重新提交；如需撤回某项授权，请使用下方的撤回按钮。",
                         "You have already answered; to withdraw a grant, use its button below."),
    "one_source": ("表单字段 source：请只指定一个要撤回的数据来源。",
                   "Form field source: name exactly one source to withdraw."),
    "not_granted": ("表单字段 source：“{label}”当前未授权，无需撤回。",
                    "Form field source: “{label}” is not granted now; there is nothing to withdraw."),
}


def problem_text(key: str, field: str | None, source: str | None) -> tuple[str, str]:
    """The message for a refused form, naming the form field and the source concerned."""
    labels = SOURCE_LABELS.get(source or "", (source or "", source or ""))
    zh, en = PROBLEMS[key]
    return zh.format(field=field, label=labels[0]), en.format(field=field, label=labels[1])
