package dashboard

import "golang.org/x/text/language"

// catalogue holds every text the pages show, by language. Templates hold
// none: they name a message.
var catalogue = map[language.Tag]map[string]string{
	language.English: {
		"app.name": "AI token dashboard",

		"title.overview": "Overview", "title.keys": "API keys", "title.usage": "Usage", "title.account": "Account",
		"title.sessions": "Sessions", "title.privacy": "Privacy policy", "title.login": "Sign in", "title.signup": "Create an account",
		"title.error": "Something went wrong", "title.deleted": "Account deleted",

		"nav.overview": "Overview", "nav.keys": "API keys", "nav.usage": "Usage", "nav.account": "Account",
		"nav.sessions": "Sessions", "nav.logout": "Sign out", "nav.privacy": "Privacy policy",

		"form.email": "Email", "form.password": "Password", "form.name": "Name", "form.name_optional": "Name (optional)",

		"login.submit": "Sign in", "login.to_signup": "No account yet? Create one",
		"login.failed":       "Wrong email or password.",
		"login.rate_limited": "Too many sign-in attempts. Please wait 15 minutes and try again.",

		"signup.submit": "Create account", "signup.to_login": "Already have an account? Sign in",
		"signup.password_hint":  "At least 10 characters.",
		"signup.adult":          "I confirm that I am 18 or older.",
		"signup.adult_required": "You must confirm that you are 18 or older.",
		"signup.privacy_link":   "Read the privacy policy",
		"signup.closed":         "Sign-up is closed on this site. Ask its operator for an account.",
		"signup.bad_email":      "Enter a valid email address.",
		"signup.bad_password":   "The password must have 10 to 256 characters.",
		"signup.bad_name":       "The name is too long (200 characters at most).",
		"signup.taken":          "An account with this email already exists. Sign in instead.",

		"overview.balance": "Balance", "overview.held": "Held for requests in progress",
		"overview.today": "Spent today (UTC)", "overview.month": "Spent this month (UTC)",
		"chart.title": "Daily spend by model, last 30 days", "chart.other": "other", "chart.empty": "No usage in the last 30 days.",

		"keys.create": "Create a key", "keys.list": "Your keys", "keys.models": "Models (comma-separated; empty for all)",
		"keys.rpm": "Requests per minute (0: no limit)", "keys.tpm": "Tokens per minute (0: no limit)",
		"keys.expires": "Expires", "keys.prefix": "Key", "keys.status": "Status", "keys.created": "Created",
		"keys.revoke": "Revoke", "keys.none": "No keys yet.", "keys.copy": "Copy",
		"keys.secret_once": "Your new key is below. Copy it now: it will not be shown again.",
		"keys.bad_name":    "The name is too long (100 characters at most).",
		"keys.bad_models":  "Too many models, or a model name that is too long.",
		"keys.bad_limit":   "Limits must be whole numbers from 0 to 1,000,000,000.",
		"keys.bad_expiry":  "The expiry must be a date in the future.",

		"usage.from": "From", "usage.to": "To", "usage.model": "Model", "usage.key": "Key ID", "usage.filter": "Filter",
		"usage.csv": "Download CSV", "usage.json": "Download JSON", "usage.time": "Time",
		"usage.tokens_in": "Input tokens", "usage.tokens_out": "Output tokens", "usage.cost": "Cost", "usage.outcome": "Outcome",
		"usage.none": "No usage matches.", "usage.older": "Older", "usage.bad_filter": "Dates must be written YYYY-MM-DD.",

		"account.profile": "Profile", "account.save": "Save", "account.saved": "Saved.",
		"account.change_password": "Change password", "account.current_password": "Current password",
		"account.new_password": "New password", "account.password_changed": "Password changed. Your other sessions were ended.",
		"account.wrong_password":     "The current password is wrong.",
		"account.privacy":            "Privacy",
		"account.ip_logging":         "Record my IP address with my API requests (uncheck to opt out; past records lose theirs too).",
		"account.export":             "Download everything held about me (JSON)",
		"account.delete":             "Delete my account",
		"account.delete_explain":     "Deleting erases your email, name, password, key names and the IP addresses of your requests, and revokes every key at once. Payment records and the ledger of your balance are kept, as accounting law requires, without your contact data; usage rows keep their amounts for the same reason.",
		"account.delete_confirm":     "I understand that this cannot be undone.",
		"account.delete_unconfirmed": "Enter your password and tick the box to delete your account.",
		"account.deleted":            "Your account was deleted. Thank you for using this service.",

		"sessions.device": "Device", "sessions.address": "Address", "sessions.last": "Last used", "sessions.started": "Signed in",
		"sessions.end": "End", "sessions.this": "this one",

		"privacy.default": "This site's operator has not published a privacy policy here yet. Ask them how your data is handled.",

		"error.unavailable": "The service is unavailable right now. Please try again shortly.",
		"error.notfound":    "Not found.",
		"error.https":       "Please use this site over HTTPS.",

		"title.billing": "Billing", "nav.billing": "Billing",
		"billing.topup": "Add credit", "billing.bounds": "Amounts from", "billing.amount": "Amount",
		"billing.pay": "Pay with card", "billing.stripe": "You pay on Stripe's secure checkout page; the credit shows here once Stripe confirms the payment.",
		"billing.unavailable":    "Top-ups are not available on this site. Ask its operator how to add credit.",
		"billing.bad_amount":     "Enter an amount such as 20 or 20.00.",
		"billing.too_small":      "The amount must be at least {amount}.",
		"billing.too_large":      "The amount must be at most {amount}.",
		"billing.refused_amount": "The payment provider refused this amount. Try another one.",
		"billing.rate_limited":   "Too many top-ups started. Please wait a while and try again.",
		"billing.provider":       "The payment provider could not start a checkout. Please try again shortly.",
		"billing.payments":       "Payments", "billing.date": "Date", "billing.kind": "Kind", "billing.credited": "Change to balance",
		"billing.none":       "No payments yet.",
		"payment.kind.topup": "Top-up", "payment.kind.refund": "Refund", "payment.kind.dispute": "Dispute",
		"payment.status.creating": "starting", "payment.status.open": "awaiting payment", "payment.status.pending": "processing",
		"payment.status.paid": "paid", "payment.status.error": "failed", "payment.status.expired": "expired",
		"payment.status.refunded": "refunded", "payment.status.needs_response": "under review",
		"payment.status.won": "won", "payment.status.lost": "lost",
	},
	language.SimplifiedChinese: {
		"app.name": "AI 令牌控制台",

		"title.overview": "概览", "title.keys": "API 密钥", "title.usage": "用量", "title.account": "账户",
		"title.sessions": "登录会话", "title.privacy": "隐私政策", "title.login": "登录", "title.signup": "注册账户",
		"title.error": "出错了", "title.deleted": "账户已删除",

		"nav.overview": "概览", "nav.keys": "API 密钥", "nav.usage": "用量", "nav.account": "账户",
		"nav.sessions": "登录会话", "nav.logout": "退出登录", "nav.privacy": "隐私政策",

		"form.email": "电子邮箱", "form.password": "密码", "form.name": "名称", "form.name_optional": "名称（可选）",

		"login.submit": "登录", "login.to_signup": "还没有账户？立即注册",
		"login.failed":       "邮箱或密码错误。",
		"login.rate_limited": "登录尝试次数过多，请 15 分钟后再试。",

		"signup.submit": "注册", "signup.to_login": "已有账户？登录",
		"signup.password_hint":  "至少 10 个字符。",
		"signup.adult":          "我确认已年满 18 周岁。",
		"signup.adult_required": "您必须确认已年满 18 周岁。",
		"signup.privacy_link":   "阅读隐私政策",
		"signup.closed":         "本站暂不开放注册，请联系运营方开通账户。",
		"signup.bad_email":      "请输入有效的电子邮箱地址。",
		"signup.bad_password":   "密码长度须为 10 到 256 个字符。",
		"signup.bad_name":       "名称过长（最多 200 个字符）。",
		"signup.taken":          "该邮箱已注册，请直接登录。",

		"overview.balance": "余额", "overview.held": "进行中请求的冻结金额",
		"overview.today": "今日消费（UTC）", "overview.month": "本月消费（UTC）",
		"chart.title": "近 30 天各模型每日消费", "chart.other": "其他", "chart.empty": "近 30 天没有用量。",

		"keys.create": "创建密钥", "keys.list": "我的密钥", "keys.models": "模型（逗号分隔；留空表示全部）",
		"keys.rpm": "每分钟请求数（0 表示不限）", "keys.tpm": "每分钟令牌数（0 表示不限）",
		"keys.expires": "过期日期", "keys.prefix": "密钥", "keys.status": "状态", "keys.created": "创建时间",
		"keys.revoke": "吊销", "keys.none": "还没有密钥。", "keys.copy": "复制",
		"keys.secret_once": "新密钥如下。请立即复制：它不会再次显示。",
		"keys.bad_name":    "名称过长（最多 100 个字符）。",
		"keys.bad_models":  "模型过多，或模型名称过长。",
		"keys.bad_limit":   "限额须为 0 到 1,000,000,000 之间的整数。",
		"keys.bad_expiry":  "过期日期须在未来。",

		"usage.from": "开始日期", "usage.to": "结束日期", "usage.model": "模型", "usage.key": "密钥 ID", "usage.filter": "筛选",
		"usage.csv": "下载 CSV", "usage.json": "下载 JSON", "usage.time": "时间",
		"usage.tokens_in": "输入令牌", "usage.tokens_out": "输出令牌", "usage.cost": "费用", "usage.outcome": "结果",
		"usage.none": "没有符合条件的用量。", "usage.older": "更早", "usage.bad_filter": "日期格式须为 YYYY-MM-DD。",

		"account.profile": "个人资料", "account.save": "保存", "account.saved": "已保存。",
		"account.change_password": "修改密码", "account.current_password": "当前密码",
		"account.new_password": "新密码", "account.password_changed": "密码已修改，其他登录会话已结束。",
		"account.wrong_password":     "当前密码错误。",
		"account.privacy":            "隐私",
		"account.ip_logging":         "在 API 请求记录中保存我的 IP 地址（取消勾选即退出；既往记录中的 IP 也会清除）。",
		"account.export":             "下载与我有关的全部数据（JSON）",
		"account.delete":             "删除我的账户",
		"account.delete_explain":     "删除后将清除您的邮箱、名称、密码、密钥名称及请求的 IP 地址，并立即吊销所有密钥。依照会计法规，支付记录和余额账目会被保留（不含您的联系信息）；用量记录出于同样原因保留其金额。",
		"account.delete_confirm":     "我了解此操作无法撤销。",
		"account.delete_unconfirmed": "请输入密码并勾选确认框以删除账户。",
		"account.deleted":            "您的账户已删除。感谢您的使用。",

		"sessions.device": "设备", "sessions.address": "地址", "sessions.last": "最近使用", "sessions.started": "登录时间",
		"sessions.end": "结束", "sessions.this": "当前会话",

		"privacy.default": "本站运营方尚未在此发布隐私政策，请向其询问您的数据如何处理。",

		"error.unavailable": "服务暂时不可用，请稍后再试。",
		"error.notfound":    "未找到。",
		"error.https":       "请通过 HTTPS 访问本站。",

		"title.billing": "充值与账单", "nav.billing": "充值与账单",
		"billing.topup": "充值", "billing.bounds": "金额范围", "billing.amount": "金额",
		"billing.pay": "银行卡支付", "billing.stripe": "您将在 Stripe 的安全结账页面付款；Stripe 确认付款后，余额会在此更新。",
		"billing.unavailable":    "本站暂不支持在线充值，请联系运营方了解充值方式。",
		"billing.bad_amount":     "请输入金额，例如 20 或 20.00。",
		"billing.too_small":      "金额不能低于 {amount}。",
		"billing.too_large":      "金额不能高于 {amount}。",
		"billing.refused_amount": "支付服务商拒绝了该金额，请换一个金额。",
		"billing.rate_limited":   "发起充值次数过多，请稍后再试。",
		"billing.provider":       "支付服务商暂时无法发起结账，请稍后再试。",
		"billing.payments":       "支付记录", "billing.date": "日期", "billing.kind": "类型", "billing.credited": "余额变动",
		"billing.none":       "还没有支付记录。",
		"payment.kind.topup": "充值", "payment.kind.refund": "退款", "payment.kind.dispute": "争议",
		"payment.status.creating": "发起中", "payment.status.open": "待付款", "payment.status.pending": "处理中",
		"payment.status.paid": "已支付", "payment.status.error": "失败", "payment.status.expired": "已过期",
		"payment.status.refunded": "已退款", "payment.status.needs_response": "审核中",
		"payment.status.won": "已胜诉", "payment.status.lost": "已败诉",
	},
}
