package georepv1

import (
	_ "embed"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// sourceDescriptors is slave.proto compiled with its comments (buf build,
// run by make proto). The generated Go code carries the descriptor without
// comments; this copy lets server reflection hand grpcurl the API's
// documentation.
//
//go:embed slave.binpb
var sourceDescriptors []byte

// SourceFiles returns the georep.v1 file descriptors with their source
// comments. Files they import resolve through protoregistry.GlobalFiles.
func SourceFiles() (*protoregistry.Files, error) {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(sourceDescriptors, &set); err != nil {
		return nil, fmt.Errorf("decode the embedded slave.binpb (regenerate it with make proto): %w", err)
	}
	files := new(protoregistry.Files)
	for _, fdp := range set.GetFile() {
		if _, err := files.FindFileByPath(fdp.GetName()); err == nil {
			continue
		}
		fd, err := protodesc.NewFile(fdp, chainResolver{files, protoregistry.GlobalFiles})
		if err != nil {
			return nil, fmt.Errorf("build %s from the embedded slave.binpb (regenerate it with make proto): %w", fdp.GetName(), err)
		}
		if err := files.RegisterFile(fd); err != nil {
			return nil, fmt.Errorf("register %s: %w", fdp.GetName(), err)
		}
	}
	return files, nil
}

// chainResolver looks descriptors up in each resolver in turn.
type chainResolver []interface {
	FindFileByPath(string) (protoreflect.FileDescriptor, error)
	FindDescriptorByName(protoreflect.FullName) (protoreflect.Descriptor, error)
}

func (c chainResolver) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	for _, r := range c {
		if fd, err := r.FindFileByPath(path); err == nil {
			return fd, nil
		}
	}
	return nil, protoregistry.NotFound
}

func (c chainResolver) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	for _, r := range c {
		if d, err := r.FindDescriptorByName(name); err == nil {
			return d, nil
		}
	}
	return nil, protoregistry.NotFound
}

// DocumentedResolver resolves descriptors from SourceFiles first, so
// georep.v1 comes with its comments, and everything else (health,
// reflection) from protoregistry.GlobalFiles.
func DocumentedResolver() (protodesc.Resolver, error) {
	files, err := SourceFiles()
	if err != nil {
		return nil, err
	}
	return chainResolver{files, protoregistry.GlobalFiles}, nil
}
