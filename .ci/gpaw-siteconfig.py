# GPAW build without MPI/ScaLAPACK/FFTW, C++ build with g++ (GPAW >= 26 compiles C++).
compiler = 'g++'
mpi = False
scalapack = False
fftw = False
libraries = ['xc', 'openblas']
