package failover

// For the external test package (the tests that run real servers import
// the lab's helpers, which import this package).
var (
	PostmasterPID = postmasterPID
	Running       = running
)
