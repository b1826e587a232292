module github.com/branchmp/branchmp

go 1.26.8

require (
	github.com/mixpanel/mixpanel-go v1.2.1
	go.uber.org/zap v1.28.0
)

require go.uber.org/multierr v1.10.0 // indirect
