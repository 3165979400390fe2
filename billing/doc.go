// Package billing is the live state of customer accounts in Redis, shared
// by every gateway node: API key records and their cache notices,
// admission (the balance check and hold, rpm and tpm windows, IP and model
// rules), settlement (release the hold, debit the cost, append the usage
// record to the stream), credits applied once, and the reads reconcile
// needs. Each operation is one Lua script over one account's keys. The
// amounts it works in come from billing/money; the ledger those accounts
// are rebuilt from is package usagelog.
package billing
