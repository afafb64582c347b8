#ifndef TWOBP_CMPI_SHIM_H
#define TWOBP_CMPI_SHIM_H
/* Open MPI defines its handles and sentinels as macros over global structs, which Swift cannot import. */
#include <mpi.h>

MPI_Comm twobp_mpi_comm_world(void);
MPI_Datatype twobp_mpi_float(void);
MPI_Datatype twobp_mpi_double(void);
MPI_Datatype twobp_mpi_byte(void);
MPI_Datatype twobp_mpi_int64(void);
MPI_Op twobp_mpi_sum(void);
MPI_Op twobp_mpi_max(void);
MPI_Request twobp_mpi_request_null(void);
MPI_Status *twobp_mpi_status_ignore(void);
int twobp_mpi_any_source(void);
int twobp_mpi_any_tag(void);
int twobp_mpi_success(void);
int twobp_mpi_thread_multiple(void);
int twobp_mpi_thread_serialized(void);
#endif
