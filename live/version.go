package live

import "fmt"

// CodeAgentVersion: an agent on a server runs another understudy build
// than the one on this machine.
const CodeAgentVersion FindingCode = "agent-version"

// CheckVersions compares the build of each agent that reported one with the
// build that took the reading (Status.Understudy). Pure.
func CheckVersions(st *Status) []Finding {
	var out []Finding
	if st.Backup != nil && st.Backup.Agent != nil {
		if v := st.Backup.Agent.Understudy; !v.Same(st.Understudy) {
			out = append(out, Finding{Warning, CodeAgentVersion, "",
				fmt.Sprintf("the backup agent runs understudy %s, this machine %s", v.Short(), st.Understudy.Short()),
				"`understudy apply` puts this machine's build on the agent's server and reboots the agent (lab: `understudy lab down`, then `lab up --backup`); if the agent's is the newer one, upgrade understudy here first (docs/install.md)"})
		}
	}
	for _, a := range st.Agents {
		if a.Error != "" {
			continue // an agent that did not answer is a finding of its own
		}
		if v := a.Understudy; !v.Same(st.Understudy) {
			out = append(out, Finding{Warning, CodeAgentVersion, a.Node,
				fmt.Sprintf("the node agent of %s runs understudy %s, this machine %s", a.Node, v.Short(), st.Understudy.Short()),
				"`understudy apply` puts this machine's build on the node's server and reboots its agent (lab: `understudy lab down`, then `lab up`); if the agent's is the newer one, upgrade understudy here first (docs/install.md)"})
		}
	}
	return out
}
