#include "CMPIShim.h"

MPI_Comm twobp_mpi_comm_world(void) { return MPI_COMM_WORLD; }
MPI_Datatype twobp_mpi_float(void) { return MPI_FLOAT; }
MPI_Datatype twobp_mpi_double(void) { return MPI_DOUBLE; }
MPI_Datatype twobp_mpi_byte(void) { return MPI_BYTE; }
MPI_Datatype twobp_mpi_int64(void) { return MPI_INT64_T; }
MPI_Op twobp_mpi_sum(void) { return MPI_SUM; }
MPI_Op twobp_mpi_max(void) { return MPI_MAX; }
MPI_Request twobp_mpi_request_null(void) { return MPI_REQUEST_NULL; }
MPI_Status *twobp_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
int twobp_mpi_any_source(void) { return MPI_ANY_SOURCE; }
int twobp_mpi_any_tag(void) { return MPI_ANY_TAG; }
int twobp_mpi_success(void) { return MPI_SUCCESS; }
int twobp_mpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }
int twobp_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
