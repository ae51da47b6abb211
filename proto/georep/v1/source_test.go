package georepv1

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestSourceFilesMatchGeneratedCode fails when slave.proto changed but
// slave.binpb was not rebuilt: reflection would describe a stale API.
func TestSourceFilesMatchGeneratedCode(t *testing.T) {
	files, err := SourceFiles()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := files.FindFileByPath(File_georep_v1_slave_proto.Path())
	if err != nil {
		t.Fatalf("embedded descriptors lack %s: %v", File_georep_v1_slave_proto.Path(), err)
	}
	embedded := protodesc.ToFileDescriptorProto(fd)
	embedded.SourceCodeInfo = nil
	generated := protodesc.ToFileDescriptorProto(File_georep_v1_slave_proto)
	if !proto.Equal(embedded, generated) {
		t.Fatal("slave.binpb differs from the generated code: run make proto")
	}
}

func TestSourceFilesCarryComments(t *testing.T) {
	r, err := DocumentedResolver()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name protoreflect.FullName
		want string
	}{
		{"georep.v1.Slave.Handshake", "compares protocol and object versions"},
		{"georep.v1.Slave.EntryOps", "one failing entry"},
	}
	for _, tc := range tests {
		t.Run(string(tc.name), func(t *testing.T) {
			d, err := r.FindDescriptorByName(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			got := d.ParentFile().SourceLocations().ByDescriptor(d).LeadingComments
			if !strings.Contains(got, tc.want) {
				t.Errorf("leading comments of %s = %q, want them to contain %q", tc.name, got, tc.want)
			}
		})
	}
}
