package live

import (
	"errors"
	"fmt"
	"strings"

	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// The major-version finding codes.
const (
	// CodeImageMajor: the nodes' images are of different PostgreSQL majors.
	CodeImageMajor FindingCode = "image-major"
	// CodeRunningMajor: a node runs another major than its image is.
	CodeRunningMajor FindingCode = "running-major"
)

// MajorFindings compares the majors of the nodes' images with the
// cluster's, and each running server's with its image's (pure). A standby
// replays its primary's WAL and reads its data files as they are, so every
// node of a cluster must run the same major (PostgreSQL docs,
// warm-standby.html: "the same major PostgreSQL version").
func MajorFindings(st *Status, c pgconf.Cluster) []Finding {
	var out []Finding
	reported := map[string]bool{}
	for _, n := range st.Nodes {
		if !n.Reachable || n.Image == nil || n.Image.Major == 0 || n.Facts == nil {
			continue
		}
		running, err := pgops.MajorOfVersionNum(n.Facts.Settings["server_version_num"])
		if err != nil || running == n.Image.Major {
			continue
		}
		reported[n.Name] = true
		out = append(out, Finding{Critical, CodeRunningMajor, n.Name,
			fmt.Sprintf("%s runs PostgreSQL %d, but it is started from %s, which is PostgreSQL %d: its next restart would start PostgreSQL %d on data of %d, which fails", n.Name, running, n.Image, n.Image.Major, n.Image.Major, running),
			fmt.Sprintf("start %s from PostgreSQL %d again (its image, or the lab's UNDERSTUDY_PG_BINDIR, as when it was set up) and run `understudy check`; moving the cluster to %d is an upgrade of every node (pg_upgrade, or pg_dump and restore into a new setup), not an image change", n.Name, running, n.Image.Major)})
	}
	var r *majorRefusal
	if errors.As(imageMajors(st, c, reported), &r) {
		out = append([]Finding{{Critical, CodeImageMajor, r.node, r.problem, r.fix}}, out...)
	}
	return out
}

// majorRefusal is a major mismatch between the nodes' images.
type majorRefusal struct{ node, problem, fix string }

func (e *majorRefusal) Error() string { return e.problem + "\n  fix: " + e.fix }

// imageMajors is an error naming both images and the fix when a node's
// image is of another major than the cluster (whose major comes from the
// primary's image when init ran); nil when they agree or a reference does
// not say its major. When no node's image is of the cluster's major, the
// nodes in skip (reported running on another major than their image) are
// left out.
func imageMajors(st *Status, c pgconf.Cluster, skip map[string]bool) error {
	var want *NodeStatus
	for i := range st.Nodes {
		if img := st.Nodes[i].Image; img != nil && img.Major == c.Major {
			if want == nil || st.Nodes[i].Name == c.InitialPrimary {
				want = &st.Nodes[i]
			}
		}
	}
	var odd, images []string
	for _, n := range st.Nodes {
		if n.Image == nil || n.Image.Major == 0 || n.Image.Major == c.Major || (want == nil && skip[n.Name]) {
			continue
		}
		odd = append(odd, n.Name)
		images = append(images, fmt.Sprintf("%s runs %s (PostgreSQL %d)", n.Name, n.Image, n.Image.Major))
	}
	if len(odd) == 0 {
		return nil
	}
	if want == nil {
		return &majorRefusal{node: strings.Join(odd, ","),
			problem: fmt.Sprintf("%s, but the cluster's data is PostgreSQL %d (as it was set up): PostgreSQL starts only on data of its own major", strings.Join(images, "; "), c.Major),
			fix: fmt.Sprintf("run %s from PostgreSQL %d again (Kamal: its image in config/deploy.yml; a lab: UNDERSTUDY_PG_BINDIR), then run the command again; moving to another major is an upgrade of the whole cluster (pg_upgrade, or pg_dump and restore into a new setup)",
				strings.Join(odd, " and "), c.Major)}
	}
	return &majorRefusal{node: strings.Join(odd, ","),
		problem: fmt.Sprintf("%s, but %s runs %s (PostgreSQL %d): a standby replays its primary's WAL and must run the same major", strings.Join(images, "; "), want.Name, want.Image, c.Major),
		fix: fmt.Sprintf("give %s %s, as %s has (Kamal: in config/deploy.yml), then run the command again; to move to another major, upgrade the whole cluster (pg_upgrade, or pg_dump and restore into a new setup), not one node",
			strings.Join(odd, " and "), want.Image, want.Name)}
}

// MajorRefusal is apply's refusal when MajorFindings has any: an error
// holding each problem and its fix (nil when there is none).
func MajorRefusal(st *Status, c pgconf.Cluster) error {
	fs := MajorFindings(st, c)
	if len(fs) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("refused, nothing was cloned or started:\n")
	for i, f := range fs {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(f.Problem + "\n  fix: " + f.Fix)
	}
	return errors.New(b.String())
}
