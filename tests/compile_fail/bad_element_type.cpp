// expect: NDArray: element type must be
#include "dl/dl.hpp"
int main() { dl::NDArray<char> a; }
