import Foundation
import Layers
import Pipeline
import Tensor

/// Collects named tensors from every rank onto rank 0, whatever the transport,
/// by shipping each rank's tensors as a safetensors byte image.
///
/// Used for checkpoints and validation, a few times per run; the step itself never gathers.
public enum ParameterGathering {
    /// Every rank's tensors and buffers, in rank order, on `root`; nil on the other ranks.
    public static func gather(_ tensors: [NamedTensor], buffers: [Buffer] = [], metadata: [String: String] = SafeTensors.defaultMetadata,
                              over transport: Transport, root: Int = 0) throws -> [SafeTensorsFile]? {
        let bytes = try SafeTensors.encode(tensors, buffers: buffers, metadata: metadata)
        guard let all = try transport.gather(bytes, root: root) else { return nil }
        return try all.enumerated().map { rank, image in
            try SafeTensorsFile(bytes: Data(image), source: "tensors gathered from rank \(rank)")
        }
    }
}
