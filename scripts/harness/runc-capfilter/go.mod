module millrace/harness/runc-capfilter

go 1.21
