"""The feature catalogue: the single source of truth for every model feature.

Each entry names the data source it needs (for consent and missing-source handling), its monotone direction
(which becomes LightGBM's ``monotone_constraints``), its reason group, bilingual labels and reason texts, and
whether an applicant can change it (for recourse). features.py computes exactly these names, in this order.

Reason texts are templates: ``{value}`` is the applicant's own value, ``{reference}`` a comparison value
(e.g. the industry median), both formatted with the entry's ``fmt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from service.scoring.raw import CITY_TIERS, INDUSTRIES, LEGAL_FORMS, PURPOSES, REGIONS

# Bump when the meaning of any feature changes: bundles record it and the service refuses a mismatch.
FEATURE_CODE_VERSION = "1.1.0"  # 1.1.0: the related-party graph features

WINDOW_MONTHS = 24  # months of history a feature may look at, counted back from the month before application

Direction = Literal[-1, 0, 1]  # +1: a higher value means more risk; -1: less risk; 0: no constraint

# Fields that may be in the data for fairness monitoring but must never reach a model.
PROTECTED_FIELDS = frozenset({"owner_age", "owner_gender"})


@dataclass(frozen=True)
class Group:
    name: str
    label_zh: str
    label_en: str


GROUPS: dict[str, Group] = {
    g.name: g
    for g in (
        Group("cash_flow_level", "经营流水规模", "Cash-flow level"),
        Group("cash_flow_volatility", "经营流水波动", "Cash-flow volatility"),
        Group("cash_flow_trend", "经营流水趋势", "Cash-flow trend"),
        Group("tax_compliance", "纳税合规", "Tax compliance"),
        Group("invoicing", "开票活跃度", "Invoicing activity"),
        Group("electricity_stability", "用电稳定性", "Electricity-use stability"),
        Group("utility_payment", "水电缴费", "Utility bill payment"),
        Group("social_insurance_continuity", "社保缴纳连续性", "Social-insurance continuity"),
        Group("leverage", "负债与申请额度", "Leverage and loan size"),
        Group("consistency", "多源数据一致性", "Consistency across sources"),
        Group("credit_history", "信用记录", "Credit history"),
        Group("business_profile", "企业基本情况", "Business profile"),
        Group("related_parties", "关联企业风险", "Related firms' risk"),
        Group("shared_contacts", "共用联系方式与账户", "Shared contact details and accounts"),
        # Not a reason group: the summed effect of features whose source was absent or not consented to.
        Group("missing_data", "数据缺失的影响", "Effect of data not available"),
    )
}
MISSING_DATA = "missing_data"


@dataclass(frozen=True)
class Feature:
    name: str
    source: str  # the raw source it reads; "a+b" when it reads several, "coverage" for the count of sources
    group: str
    direction: Direction
    label_zh: str
    label_en: str
    reason_zh: str
    reason_en: str
    actionable: bool = True  # False: the applicant cannot change it (never offered as recourse)
    fmt: str = "{:.2f}"
    categories: tuple[str, ...] = ()  # non-empty: a categorical feature, encoded as the index in this tuple

    @property
    def categorical(self) -> bool:
        return bool(self.categories)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.source.split("+"))


def _f(name: str, source: str, group: str, direction: Direction, label_zh: str, label_en: str,
       reason_zh: str, reason_en: str, **kw: object) -> Feature:
    return Feature(name, source, group, direction, label_zh, label_en, reason_zh, reason_en, **kw)  # type: ignore[arg-type]


_PCT = "{:.0%}"
_INT = "{:.0f}"
_MONEY = "{:,.0f}"

CATALOG: tuple[Feature, ...] = (
    # --- cash flow (payments) ---------------------------------------------------------------------------
    _f("pay_inflow_avg_3m", "payments", "cash_flow_level", -1, "近3个月月均流入", "Average monthly inflow, last 3 months",
       "近3个月月均经营流入为{value}元，同行业中位数为{reference}元",
       "Average monthly inflow over the last 3 months is CNY {value}; the median for your industry is CNY {reference}",
       fmt=_MONEY),
    _f("pay_inflow_avg_12m", "payments", "cash_flow_level", -1, "近12个月月均流入",
       "Average monthly inflow, last 12 months",
       "近12个月月均经营流入为{value}元，同行业中位数为{reference}元",
       "Average monthly inflow over the last 12 months is CNY {value}; the median for your industry is CNY {reference}",
       fmt=_MONEY),
    _f("pay_inflow_growth_3m", "payments", "cash_flow_trend", -1, "近3个月流入环比增长",
       "Inflow growth, last 3 months vs the 3 before",
       "近3个月经营流入较前3个月变化{value}，同行业中位数为{reference}",
       "Inflow over the last 3 months changed by {value} against the 3 months before; the industry median is {reference}",
       fmt=_PCT),
    _f("pay_inflow_growth_yoy", "payments", "cash_flow_trend", -1, "近3个月流入同比增长",
       "Inflow growth, last 3 months vs a year earlier",
       "近3个月经营流入同比变化{value}，同行业中位数为{reference}",
       "Inflow over the last 3 months changed by {value} against a year earlier; the industry median is {reference}",
       fmt=_PCT),
    _f("pay_inflow_cv_3m", "payments", "cash_flow_volatility", 1, "近3个月流水波动系数",
       "Cash-flow volatility, last 3 months",
       "近3个月经营流水波动系数为{value}，同行业中位数为{reference}",
       "Monthly cash-flow volatility over the last 3 months is {value}; the median for your industry is {reference}"),
    _f("pay_inflow_cv_6m", "payments", "cash_flow_volatility", 1, "近6个月流水波动系数",
       "Cash-flow volatility, last 6 months",
       "近6个月经营流水波动系数为{value}，同行业中位数为{reference}",
       "Monthly cash-flow volatility over the last 6 months is {value}; the median for your industry is {reference}"),
    _f("pay_inflow_cv_12m", "payments", "cash_flow_volatility", 1, "近12个月流水波动系数",
       "Cash-flow volatility, last 12 months",
       "近12个月经营流水波动系数为{value}，同行业中位数为{reference}",
       "Monthly cash-flow volatility over the last 12 months is {value}; the median for your industry is {reference}"),
    _f("pay_min_to_avg_12m", "payments", "cash_flow_volatility", -1, "近12个月最低月流入占月均比例",
       "Weakest month's inflow as a share of the average, last 12 months",
       "近12个月最低一个月的流入仅为月均的{value}，同行业中位数为{reference}",
       "Your weakest month in the last 12 brought in {value} of the monthly average; the industry median is {reference}",
       fmt=_PCT),
    _f("pay_net_margin_6m", "payments", "cash_flow_level", -1, "近6个月净流入率", "Net inflow rate, last 6 months",
       "近6个月净流入占流入的{value}，同行业中位数为{reference}",
       "Over the last 6 months, net inflow was {value} of inflow; the industry median is {reference}", fmt=_PCT),
    _f("pay_txn_avg_3m", "payments", "cash_flow_level", -1, "近3个月月均交易笔数",
       "Average monthly transactions, last 3 months",
       "近3个月月均交易{value}笔，同行业中位数为{reference}笔",
       "You had {value} transactions a month over the last 3 months; the industry median is {reference}", fmt=_INT),
    _f("pay_txn_trend_6m", "payments", "cash_flow_trend", -1, "近6个月交易笔数趋势", "Transaction-count trend, last 6 months",
       "近6个月交易笔数月均变化{value}，同行业中位数为{reference}",
       "Your transaction count changed by {value} a month over the last 6 months; the industry median is {reference}",
       fmt=_PCT),
    _f("pay_counterparties_avg_3m", "payments", "cash_flow_level", -1, "近3个月月均交易对手数",
       "Average distinct counterparties a month, last 3 months",
       "近3个月月均交易对手{value}个，同行业中位数为{reference}个，客户集中度偏高",
       "You dealt with {value} distinct counterparties a month over the last 3 months; the industry median is {reference}",
       fmt=_INT),
    _f("pay_refund_rate_6m", "payments", "cash_flow_trend", 1, "近6个月退款率", "Refund rate, last 6 months",
       "近6个月退款占流入的{value}，同行业中位数为{reference}",
       "Refunds were {value} of inflow over the last 6 months; the industry median is {reference}", fmt=_PCT),
    _f("pay_months_12m", "payments", "cash_flow_level", -1, "近12个月有流水月数", "Months with payment data, last 12",
       "近12个月仅有{value}个月有经营流水记录", "Only {value} of the last 12 months have payment records", fmt=_INT),
    # --- tax ------------------------------------------------------------------------------------------------
    _f("tax_sales_avg_12m", "tax", "tax_compliance", -1, "近12个月月均申报销售额",
       "Average monthly declared sales, last 12 months",
       "近12个月月均申报销售额为{value}元，同行业中位数为{reference}元",
       "Average monthly declared sales over the last 12 months are CNY {value}; the industry median is CNY {reference}",
       fmt=_MONEY),
    _f("tax_sales_growth_6m", "tax", "tax_compliance", -1, "近6个月申报销售额增长",
       "Declared sales growth, last 6 months vs the 6 before",
       "近6个月申报销售额较前6个月变化{value}，同行业中位数为{reference}",
       "Declared sales over the last 6 months changed by {value} against the 6 before; the industry median is {reference}",
       fmt=_PCT),
    _f("tax_sales_cv_12m", "tax", "tax_compliance", 1, "近12个月申报销售额波动系数",
       "Declared-sales volatility, last 12 months",
       "近12个月申报销售额波动系数为{value}，同行业中位数为{reference}",
       "Declared-sales volatility over the last 12 months is {value}; the industry median is {reference}"),
    _f("tax_on_time_rate_12m", "tax", "tax_compliance", -1, "近12个月按期申报率", "On-time filing rate, last 12 months",
       "近12个月按期申报率为{value}，同行业中位数为{reference}",
       "You filed on time in {value} of the last 12 months; the industry median is {reference}", fmt=_PCT),
    _f("tax_late_filings_12m", "tax", "tax_compliance", 1, "近12个月逾期申报次数", "Late filings, last 12 months",
       "近12个月有{value}次逾期申报", "You filed late {value} times in the last 12 months", fmt=_INT),
    _f("tax_filing_months_12m", "tax", "tax_compliance", -1, "近12个月申报月数", "Months with a tax filing, last 12",
       "近12个月仅有{value}个月有纳税申报记录", "Only {value} of the last 12 months have a tax filing", fmt=_INT),
    _f("tax_invoice_count_avg_3m", "tax", "invoicing", -1, "近3个月月均开票张数",
       "Average invoices issued a month, last 3 months",
       "近3个月月均开具增值税发票{value}张，同行业中位数为{reference}张",
       "You issued {value} VAT invoices a month over the last 3 months; the industry median is {reference}", fmt=_INT),
    _f("tax_invoice_trend_6m", "tax", "invoicing", -1, "近6个月开票张数趋势", "Invoice-count trend, last 6 months",
       "近6个月开票张数月均变化{value}，同行业中位数为{reference}",
       "Your invoice count changed by {value} a month over the last 6 months; the industry median is {reference}",
       fmt=_PCT),
    _f("tax_invoice_months_12m", "tax", "invoicing", -1, "近12个月有开票月数", "Months with invoices issued, last 12",
       "近12个月仅有{value}个月开具发票", "You issued invoices in only {value} of the last 12 months", fmt=_INT),
    _f("tax_arrears_to_sales", "tax", "tax_compliance", 1, "欠税占月均销售额比例",
       "Tax arrears against monthly sales",
       "最近欠税金额相当于月均销售额的{value}", "Your latest tax arrears equal {value} of your average monthly sales",
       fmt=_PCT),
    _f("tax_arrears_months_12m", "tax", "tax_compliance", 1, "近12个月欠税月数", "Months in tax arrears, last 12",
       "近12个月有{value}个月存在欠税", "You were in tax arrears in {value} of the last 12 months", fmt=_INT),
    _f("tax_grade", "tax", "tax_compliance", -1, "纳税信用等级", "Tax credit grade",
       "纳税信用等级为{value}", "Your tax credit grade is {value}", fmt="{}", actionable=False),
    _f("tax_vat_rate_12m", "tax", "tax_compliance", 0, "近12个月实际税负率", "Effective VAT rate, last 12 months",
       "近12个月实际增值税税负率为{value}，同行业中位数为{reference}",
       "Your effective VAT rate over the last 12 months is {value}; the industry median is {reference}", fmt=_PCT),
    # --- electricity and utilities ----------------------------------------------------------------------------
    _f("elec_kwh_avg_3m", "utilities", "electricity_stability", -1, "近3个月月均用电量",
       "Average monthly electricity use, last 3 months",
       "近3个月月均用电{value}千瓦时，同行业中位数为{reference}千瓦时",
       "You used {value} kWh a month over the last 3 months; the industry median is {reference} kWh", fmt=_MONEY),
    _f("elec_kwh_cv_12m", "utilities", "electricity_stability", 1, "近12个月用电波动系数",
       "Electricity-use volatility, last 12 months",
       "近12个月用电量波动系数为{value}，同行业中位数为{reference}",
       "Electricity-use volatility over the last 12 months is {value}; the industry median is {reference}"),
    _f("elec_kwh_growth_3m", "utilities", "electricity_stability", -1, "近3个月用电环比变化",
       "Electricity use, last 3 months vs the 3 before",
       "近3个月用电量较前3个月变化{value}，同行业中位数为{reference}",
       "Electricity use over the last 3 months changed by {value} against the 3 before; the industry median is {reference}",
       fmt=_PCT),
    _f("elec_kwh_growth_yoy", "utilities", "electricity_stability", -1, "近3个月用电同比变化",
       "Electricity use, last 3 months vs a year earlier",
       "近3个月用电量同比变化{value}，同行业中位数为{reference}",
       "Electricity use over the last 3 months changed by {value} against a year earlier; the industry median is {reference}",
       fmt=_PCT),
    _f("elec_low_months_12m", "utilities", "electricity_stability", 1, "近12个月用电骤降月数",
       "Months with electricity use below half the average, last 12",
       "近12个月有{value}个月用电量不足月均一半", "In {value} of the last 12 months you used less than half your "
       "average electricity", fmt=_INT),
    _f("elec_intensity_change_12m", "utilities+payments+tax", "electricity_stability", 0, "单位流水能耗变化",
       "Change in electricity per unit of sales",
       "近6个月单位经营流水用电量较前6个月变化{value}",
       "Electricity used per unit of sales changed by {value} over the last 6 months against the 6 before", fmt=_PCT),
    _f("util_days_late_avg_6m", "utilities", "utility_payment", 1, "近6个月电费平均逾期天数",
       "Average days electricity bills were paid late, last 6 months",
       "近6个月电费平均逾期{value}天，同行业中位数为{reference}天",
       "Over the last 6 months you paid electricity bills {value} days late on average; the industry median is {reference}",
       fmt="{:.1f}"),
    _f("util_arrears_months_12m", "utilities", "utility_payment", 1, "近12个月欠缴电费月数",
       "Months with unpaid utility bills, last 12",
       "近12个月有{value}个月存在欠缴电费", "You had unpaid utility bills in {value} of the last 12 months", fmt=_INT),
    _f("util_months_12m", "utilities", "electricity_stability", -1, "近12个月有用电记录月数",
       "Months with electricity records, last 12",
       "近12个月仅有{value}个月有用电记录", "Only {value} of the last 12 months have electricity records", fmt=_INT),
    # --- social insurance ------------------------------------------------------------------------------------------
    _f("si_headcount_latest", "social_insurance", "social_insurance_continuity", -1, "最近参保人数",
       "Insured employees, latest month",
       "最近一个月参保人数为{value}人，同行业中位数为{reference}人",
       "{value} employees were insured in the latest month; the industry median is {reference}", fmt=_INT),
    _f("si_headcount_change_6m", "social_insurance", "social_insurance_continuity", -1, "近6个月参保人数变化",
       "Change in insured employees, last 6 months",
       "近6个月参保人数变化{value}，同行业中位数为{reference}",
       "The number of insured employees changed by {value} over the last 6 months; the industry median is {reference}",
       fmt=_PCT),
    _f("si_paid_rate_12m", "social_insurance", "social_insurance_continuity", -1, "近12个月社保按月缴纳率",
       "Share of months with contributions paid, last 12",
       "近12个月社保按月缴纳率为{value}，同行业中位数为{reference}",
       "Contributions were paid in {value} of the last 12 months; the industry median is {reference}", fmt=_PCT),
    _f("si_missed_months_12m", "social_insurance", "social_insurance_continuity", 1, "近12个月社保断缴月数",
       "Months with missed contributions, last 12",
       "近12个月社保断缴{value}个月", "Social-insurance contributions were missed in {value} of the last 12 months",
       fmt=_INT),
    _f("si_paid_streak_months", "social_insurance", "social_insurance_continuity", -1, "社保连续缴纳月数",
       "Months of uninterrupted contributions up to now",
       "社保已连续缴纳{value}个月，同行业中位数为{reference}个月",
       "Contributions have been paid without a break for {value} months; the industry median is {reference}",
       fmt=_INT),
    _f("si_contribution_per_head_6m", "social_insurance", "social_insurance_continuity", -1, "近6个月人均社保缴费",
       "Contributions per insured employee, last 6 months",
       "近6个月人均月社保缴费{value}元，同行业中位数为{reference}元",
       "Contributions per insured employee were CNY {value} a month over the last 6 months; the industry median is "
       "CNY {reference}", fmt=_MONEY),
    # --- leverage and affordability -----------------------------------------------------------------------------
    _f("loan_to_revenue", "payments+tax", "leverage", 1, "申请金额占年营收比例", "Requested amount against yearly revenue",
       "申请金额相当于近12个月营收的{value}，同行业中位数为{reference}",
       "The amount requested equals {value} of your revenue over the last 12 months; the industry median is {reference}",
       fmt=_PCT),
    _f("loan_term_months", "application", "leverage", 0, "申请期限", "Term requested",
       "申请期限为{value}个月", "The term requested is {value} months", fmt=_INT),
    _f("loan_purpose", "application", "leverage", 0, "借款用途", "Purpose of the loan",
       "借款用途为{value}", "The purpose of the loan is {value}", fmt="{}", categories=PURPOSES, actionable=False),
    # --- consistency across sources -------------------------------------------------------------------------------
    _f("xsrc_declared_to_inflow_6m", "tax+payments", "consistency", 1, "申报销售额与经营流入之比",
       "Declared sales against payment inflow, last 6 months",
       "近6个月申报销售额是经营流入的{value}倍，同行业中位数为{reference}倍",
       "Declared sales over the last 6 months are {value} times your payment inflow; the industry median is {reference}",
       fmt="{:.2f}"),
    _f("xsrc_invoice_to_sales_12m", "tax", "consistency", 0, "开票金额与申报销售额之比",
       "Invoiced amount against declared sales, last 12 months",
       "近12个月开票金额是申报销售额的{value}倍", "Invoices issued over the last 12 months are {value} times declared "
       "sales", fmt="{:.2f}"),
    _f("xsrc_elec_per_revenue_12m", "utilities+payments+tax", "consistency", 0, "单位营收用电量",
       "Electricity per 10,000 CNY of revenue, last 12 months",
       "近12个月每万元营收用电{value}千瓦时，同行业中位数为{reference}",
       "You used {value} kWh per CNY 10,000 of revenue over the last 12 months; the industry median is {reference}",
       fmt="{:.1f}"),
    _f("xsrc_sources_available", "coverage", "consistency", -1, "可用数据来源数", "Data sources available",
       "可用于评估的经营数据来源为{value}个", "{value} operating data sources were available for the assessment",
       fmt=_INT),
    # --- credit history (bureau) ---------------------------------------------------------------------------------
    _f("bureau_open_loans", "bureau", "credit_history", 1, "未结清贷款笔数", "Open loans",
       "当前有{value}笔未结清贷款，同行业中位数为{reference}笔",
       "You have {value} open loans; the industry median is {reference}", fmt=_INT),
    _f("bureau_inquiries_6m", "bureau", "credit_history", 1, "近6个月贷款查询机构数",
       "Lenders that checked your credit, last 6 months",
       "近6个月有{value}家机构查询过贷款审批，存在多头借贷倾向",
       "{value} lenders checked your credit in the last 6 months, a sign of borrowing from many lenders", fmt=_INT),
    _f("bureau_worst_dpd_12m", "bureau", "credit_history", 1, "近12个月最长逾期天数",
       "Worst days past due, last 12 months",
       "近12个月贷款最长逾期{value}天", "Your worst delay on a loan in the last 12 months was {value} days", fmt=_INT),
    # --- business profile ---------------------------------------------------------------------------------------
    _f("biz_age_months", "profile", "business_profile", -1, "经营年限（月）", "Months since registration",
       "企业成立{value}个月，同行业中位数为{reference}个月",
       "The business was registered {value} months ago; the industry median is {reference}", fmt=_INT,
       actionable=False),
    _f("biz_employees", "profile", "business_profile", -1, "员工人数", "Employees",
       "员工人数为{value}人，同行业中位数为{reference}人", "You have {value} employees; the industry median is {reference}",
       fmt=_INT, actionable=False),
    _f("biz_industry", "profile", "business_profile", 0, "所属行业", "Industry",
       "所属行业为{value}", "Your industry is {value}", fmt="{}", categories=tuple(INDUSTRIES), actionable=False),
    _f("biz_region", "profile", "business_profile", 0, "所在地区", "Region",
       "所在地区为{value}", "Your region is {value}", fmt="{}", categories=REGIONS, actionable=False),
    _f("biz_city_tier", "profile", "business_profile", 0, "城市层级", "City tier",
       "所在城市层级为{value}", "Your city tier is {value}", fmt="{}", categories=CITY_TIERS, actionable=False),
    _f("biz_legal_form", "profile", "business_profile", 0, "组织形式", "Legal form",
       "组织形式为{value}", "Your legal form is {value}", fmt="{}", categories=LEGAL_FORMS, actionable=False),
    # --- the related-party graph (links, guarantees, counterparties; service/scoring/graph.py) -------------------
    _f("graph_group_size", "links", "related_parties", 0, "关联企业集团规模", "Firms in your group",
       "与您的企业通过股东、法定代表人或担保相关联的企业共{value}家",
       "Firms linked to yours through shared owners, legal representatives or guarantees: {value}", fmt=_INT,
       actionable=False),
    _f("graph_group_age_months", "links", "related_parties", -1, "关联企业集团经营年限（月）",
       "Age of your group's oldest firm, months",
       "您所在企业集团中最早成立的企业已经营{value}个月",
       "The oldest firm of your group was registered {value} months ago", fmt=_INT, actionable=False),
    _f("graph_shared_contact_firms", "links", "shared_contacts", 0, "共用地址或电话的企业数",
       "Firms sharing your address or phone",
       "有{value}家其他企业与您登记了相同的地址或联系电话",
       "Other firms registered at your address or with your contact phone: {value}", fmt=_INT, actionable=False),
    _f("graph_shared_account_firms", "links", "shared_contacts", 1, "共用收款账户的企业数",
       "Firms sharing your receiving account",
       "有{value}家其他企业使用与您相同的收款账户",
       "Other firms that use your receiving account: {value}", fmt=_INT),
    _f("graph_linked_young_firms", "links", "shared_contacts", 1, "共用联系方式的新设企业数",
       "Firms registered near your date that share your contacts",
       "有{value}家与您共用地址、电话或账户的企业在您成立前后3个月内注册",
       "Firms sharing your address, phone or account and registered within 3 months of yours: {value}",
       fmt=_INT, actionable=False),
    _f("graph_linked_applications_30d", "links", "shared_contacts", 1, "关联企业近30天申请数",
       "Applications by linked firms, last 30 days",
       "与您相关联的企业在近30天内提交了{value}笔贷款申请",
       "Firms linked to yours made {value} loan applications in the last 30 days", fmt=_INT, actionable=False),
    _f("graph_neighbour_defaults_12m", "links", "related_parties", 1, "关联企业近12个月违约数",
       "Linked firms that defaulted, last 12 months",
       "与您共用股东、联系电话、账户或存在担保、交易关系的企业中，有{value}家在近12个月内违约",
       "Firms sharing an owner, a phone or an account with yours, or guaranteeing or trading with it, that "
       "defaulted in the last 12 months: {value}", fmt=_INT, actionable=False),
    _f("graph_neighbour_arrears_12m", "links", "related_parties", 1, "关联企业近12个月欠款数",
       "Linked firms in arrears, last 12 months",
       "与您相关联的企业中，有{value}家在近12个月内出现逾期或欠缴",
       "Firms linked to yours in arrears on a loan, taxes, utilities or social insurance in the last 12 months: "
       "{value}", fmt=_INT, actionable=False),
    _f("graph_circular_invoicing_share", "links", "shared_contacts", 1, "关联方销售占比（近3个月）",
       "Sales to related firms, last 3 months",
       "近3个月{value}的销售开票给了与您共用股东、联系方式或账户，或同时向您供货的企业",
       "{value} of your invoiced sales in the last 3 months went to firms that share an owner, contact details or "
       "an account with yours, or also supply you", fmt=_PCT, actionable=False),
    _f("graph_top_customer_share", "links", "related_parties", 1, "第一大客户销售占比（近3个月）",
       "Share of sales to your largest customer, last 3 months",
       "近3个月第一大客户占销售的{value}，客户集中度较高",
       "Your largest customer took {value} of your sales over the last 3 months", fmt=_PCT),
    _f("graph_guarantee_exposure", "links+payments+tax", "related_parties", 1, "对外担保占年收入比",
       "Guarantees given for other firms, against a year of revenue",
       "您为其他企业提供的在保担保金额为年收入的{value}",
       "Guarantees you have given for other firms and still in force come to {value} of a year's revenue",
       fmt=_PCT),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in CATALOG)
BY_NAME: dict[str, Feature] = {f.name: f for f in CATALOG}


def monotone_constraints() -> list[int]:
    """LightGBM's ``monotone_constraints`` in feature order (+1: PD may only rise with the feature)."""
    return [f.direction for f in CATALOG]


def categorical_features() -> list[str]:
    return [f.name for f in CATALOG if f.categorical]


def features_of_source(source: str) -> list[str]:
    """Features that read ``source`` (they are absent, not zero, when it is missing or not consented)."""
    return [f.name for f in CATALOG if source in f.sources]


def catalog_markdown() -> str:
    """The catalogue as a table (docs/features.md embeds this; a test keeps the two in step)."""
    arrow = {1: "↑ risk", -1: "↓ risk", 0: "none"}
    lines = ["| feature | source | group | monotone | applicant can change | en | zh |", "|---|---|---|---|---|---|---|"]
    for f in CATALOG:
        kind = " (categorical)" if f.categorical else ""
        lines.append(f"| `{f.name}`{kind} | {f.source} | {f.group} | {arrow[f.direction]} | "
                     f"{'yes' if f.actionable else 'no'} | {f.label_en} | {f.label_zh} |")
    return "\n".join(lines)
