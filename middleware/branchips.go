package branchmp

// BranchIPsPublished is the date from which Branch sends webhooks from the
// addresses in BranchWebhookIPs, as announced on Branch's help page
// "Postback and Webhook IP Address Allowlist Expands". Branch asked users
// to drop the earlier list by 2025-09-30.
const BranchIPsPublished = "2025-08-01"

// BranchWebhookIPs returns the addresses Branch sends webhooks and
// postbacks from, as published on BranchIPsPublished. Branch changes this
// list from time to time: check its help center and pass your own list in
// Config.AllowedIPs when it differs.
func BranchWebhookIPs() []string {
	return []string{
		"52.43.119.253/32", "100.21.145.61/32", "35.160.5.60/32",
		"35.163.128.27/32", "54.241.169.87/32", "44.229.177.148/32",
		"35.167.148.222/32", "44.231.103.124/32", "44.237.121.167/32",
		"44.238.95.201/32", "52.52.236.153/32", "44.247.175.42/32",
		"44.247.58.38/32", "52.33.75.0/32", "52.34.127.49/32",
		"54.177.16.103/32", "54.213.17.93/32", "184.169.196.16/32",
		"35.161.135.86/32", "44.230.175.24/32", "52.27.172.117/32",
		"35.160.133.187/32",
	}
}
