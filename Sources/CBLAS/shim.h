/* scipy-openblas32's cblas.h (found through its pkg-config file): OpenBLAS 0.3.34 with every symbol
   prefixed scipy_ (scipy_cblas_sgemm, scipy_openblas_set_num_threads_local, ...). */
#include <cblas.h>
