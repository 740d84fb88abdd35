package live

import (
	"reflect"
	"testing"
)

func TestDecideBackupAgent(t *testing.T) {
	cases := []struct {
		name string
		f    AgentFacts
		want []StepKind
	}{
		{"nothing there", AgentFacts{Container: "absent"}, []StepKind{StepAgentBinary, StepAgentBoot}},
		{"binary there, no container", AgentFacts{Container: "absent", BinaryCurrent: true, ConfigCurrent: false}, []StepKind{StepAgentBoot}},
		{"all current and running", AgentFacts{Container: "running", BinaryCurrent: true, ConfigCurrent: true}, nil},
		{"a new binary", AgentFacts{Container: "running", ConfigCurrent: true}, []StepKind{StepAgentBinary, StepAgentReboot}},
		{"a changed backup.json", AgentFacts{Container: "running", BinaryCurrent: true}, []StepKind{StepAgentReboot}},
		{"stopped", AgentFacts{Container: "exited", BinaryCurrent: true, ConfigCurrent: true}, []StepKind{StepAgentStart}},
		{"stopped, and a new binary", AgentFacts{Container: "exited", ConfigCurrent: true}, []StepKind{StepAgentBinary, StepAgentReboot}},
	}
	for _, tc := range cases {
		var got []StepKind
		for _, s := range DecideBackupAgent(tc.f) {
			got = append(got, s.Kind)
			if s.Action == "" || s.Effect == "" {
				t.Errorf("%s: step %s has no text", tc.name, s.Kind)
			}
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
